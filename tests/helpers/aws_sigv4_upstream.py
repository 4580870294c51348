"""A fake AWS endpoint for the aws_auth tests: it verifies each request's SigV4 signature with
botocore (an implementation independent of the agent's) against the real credentials, the
way AWS would, and answers 200 with what it saw, or 403 with why the signature is wrong.

Usage: aws_sigv4_upstream.py CERT_PEM KEY_PEM
Env:   REAL_ACCESS_KEY_ID, REAL_SECRET_ACCESS_KEY, REAL_SESSION_TOKEN (a request may carry
       no token; if it carries one, it must be this one).
Prints "PORT <n>" once listening on 127.0.0.1.
"""

import datetime
import hashlib
import json
import os
import ssl
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

from botocore.auth import S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

ACCESS_KEY = os.environ["REAL_ACCESS_KEY_ID"]
SECRET_KEY = os.environ["REAL_SECRET_ACCESS_KEY"]
TOKEN = os.environ["REAL_SESSION_TOKEN"]
MAX_SKEW = datetime.timedelta(minutes=5)
PRESIGN_PARAMS = {
    "X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
    "X-Amz-SignedHeaders", "X-Amz-Signature", "X-Amz-Security-Token",
}


class Mismatch(Exception):
    pass


def parse_authorization(value):
    algo, _, rest = value.partition(" ")
    if algo != "AWS4-HMAC-SHA256":
        raise Mismatch(f"algorithm {algo!r}")
    fields = {}
    for part in rest.split(","):
        k, _, v = part.strip().partition("=")
        fields[k] = v
    for k in ("Credential", "SignedHeaders", "Signature"):
        if k not in fields:
            raise Mismatch(f"Authorization lacks {k}")
    return fields


def verify(method, raw_path, headers, body):
    """Returns a summary of the request, or raises Mismatch."""
    auth = headers.get("Authorization")
    if not auth:
        raise Mismatch("no Authorization header")
    fields = parse_authorization(auth)
    ak, date, region, service, term = fields["Credential"].split("/")
    if ak != ACCESS_KEY:
        raise Mismatch("access key is not the real one")
    amz_date = headers.get("X-Amz-Date") or ""
    if amz_date[:8] != date or term != "aws4_request":
        raise Mismatch(f"scope {fields['Credential']!r} vs X-Amz-Date {amz_date!r}")
    when = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(
        tzinfo=datetime.timezone.utc)
    if abs(datetime.datetime.now(datetime.timezone.utc) - when) > MAX_SKEW:
        raise Mismatch("X-Amz-Date is not the current time")

    content_sha = headers.get("X-Amz-Content-Sha256")
    if content_sha is None:
        raise Mismatch("no X-Amz-Content-Sha256")
    if content_sha != "UNSIGNED-PAYLOAD" and content_sha != hashlib.sha256(body).hexdigest():
        raise Mismatch("X-Amz-Content-Sha256 is not the body's hash")

    signed = fields["SignedHeaders"].split(";")
    for name in headers.keys():
        if name.lower().startswith("x-amz-") and name.lower() not in signed:
            raise Mismatch(f"{name} is not signed")
    token = headers.get("X-Amz-Security-Token")
    if token is not None and token != TOKEN:
        raise Mismatch("session token is not the real one")
    query = urlsplit(raw_path).query
    leftover = PRESIGN_PARAMS & {k for k, _ in parse_qsl(query, keep_blank_values=True)}
    if leftover:
        raise Mismatch(f"pre-signing parameters left in the query: {sorted(leftover)}")

    host = headers.get("Host")
    req = AWSRequest(method=method, url=f"https://{host}{raw_path}", data=body)
    for name in signed:
        values = headers.get_all(name) or []
        if not values:
            raise Mismatch(f"signed header {name} is absent")
        for v in values:
            req.headers[name] = v
    req.context["timestamp"] = amz_date
    signer_cls = S3SigV4Auth if service == "s3" else SigV4Auth
    signer = signer_cls(Credentials(ACCESS_KEY, SECRET_KEY, token), service, region)
    canonical = signer.canonical_request(req)
    expected = signer.signature(signer.string_to_sign(req, canonical), req)
    if expected != fields["Signature"]:
        raise Mismatch(f"signature mismatch; canonical request was:\n{canonical}")
    return {
        "ok": True,
        "method": method,
        "path": raw_path,
        "region": region,
        "service": service,
        "signed_headers": signed,
        "content_sha256": content_sha,
        "session_token": token is not None,
        "body_len": len(body),
        "body_sha256": hashlib.sha256(body).hexdigest(),
    }


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def read_body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def handle_any(self):
        body = self.read_body()
        try:
            status, reply = 200, verify(self.command, self.path, self.headers, body)
        except Mismatch as e:
            status, reply = 403, {"ok": False, "why": str(e)}
        data = json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = handle_any

    def log_message(self, *args):
        pass


def main():
    cert, key = sys.argv[1], sys.argv[2]
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print(f"PORT {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
