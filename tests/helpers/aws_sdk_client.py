"""A workload using the real AWS SDK (boto3) with placeholder credentials, through the agent's
tunnel listener as its HTTPS proxy. Calls return the fake endpoint's verdict as raw bodies
(InvokeModel and GetObject stream the response body untouched).

Usage: aws_sdk_client.py ENDPOINT_URL PROXY_URL CA_BUNDLE
Prints one JSON line per call: {"call": ..., "status": ..., "body": <endpoint's JSON or error>}.
"""

import json
import sys

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

ENDPOINT, PROXY, CA = sys.argv[1], sys.argv[2], sys.argv[3]
PLACEHOLDER = dict(
    aws_access_key_id="AKIAIOSFODNN7EXAMPLE",
    aws_secret_access_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
)
config = Config(
    proxies={"https": PROXY},
    s3={"addressing_style": "path"},
    retries={"max_attempts": 1},
)


def client(service, region):
    return boto3.client(
        service, region_name=region, endpoint_url=ENDPOINT, verify=CA, config=config,
        **PLACEHOLDER,
    )


def report(name, fn):
    try:
        resp = fn()
        status = resp["ResponseMetadata"]["HTTPStatusCode"]
        body = json.loads(resp["body" if "body" in resp else "Body"].read())
    except ClientError as e:
        status = e.response["ResponseMetadata"]["HTTPStatusCode"]
        body = {"error": str(e)}
    except Exception as e:  # a transport failure is a result too: the test shows it
        status, body = None, {"error": repr(e)}
    print(json.dumps({"call": name, "status": status, "body": body}), flush=True)


bedrock = client("bedrock-runtime", "us-east-1")
s3 = client("s3", "eu-west-1")
report("invoke_model", lambda: bedrock.invoke_model(
    modelId="anthropic.claude-v2:1", body=b'{"prompt":"hello"}',
    contentType="application/json"))
report("get_object", lambda: s3.get_object(Bucket="bucket", Key="reports/q1 2026.csv"))
report("get_object_denied_region", lambda: client("s3", "ap-south-1").get_object(
    Bucket="bucket", Key="k"))
