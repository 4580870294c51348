"""A real gRPC client (grpcio) for tests/grpc.rs: dials the agent's MITM listener, trusting the
agent's CA, with the origin as :authority (as a redirected client would). Prints JSON results.
Usage: client.py AGENT_ADDR AUTHORITY CA_PEM"""
import json
import sys

import grpc

agent, authority, ca = sys.argv[1], sys.argv[2], sys.argv[3]
creds = grpc.ssl_channel_credentials(root_certificates=open(ca, "rb").read())
options = (
    ("grpc.default_authority", authority),
    ("grpc.ssl_target_name_override", authority.split(":")[0]),
)
out = {}
with grpc.secure_channel(agent, creds, options=options) as ch:
    ident = lambda b: b
    md = (("authorization", "Bearer proxy-token-abc"),)
    unary = ch.unary_unary("/test.Echo/Unary", request_serializer=ident, response_deserializer=ident)
    resp, call = unary.with_call(b"hello", metadata=md, timeout=10)
    out["unary"] = resp.decode()
    out["unary_trailers"] = {k: v for k, v in call.trailing_metadata()}
    out["unary_code"] = call.code().name
    stream = ch.unary_stream("/test.Echo/Stream", request_serializer=ident, response_deserializer=ident)
    out["stream"] = [m.decode() for m in stream(b"s", timeout=10)]
    fail = ch.unary_unary("/test.Echo/Fail", request_serializer=ident, response_deserializer=ident)
    try:
        fail(b"x", timeout=10)
        out["fail"] = "no error"
    except grpc.RpcError as e:
        out["fail"] = {"code": e.code().name, "details": e.details()}
print(json.dumps(out), flush=True)
