"""A real gRPC server (grpcio) over TLS for tests/grpc.rs. No protoc: generic handlers with raw
bytes. Methods of service test.Echo:
  Unary  -> b"auth=<authorization metadata>;msg=<request>", plus trailing metadata x-trailer: t1
  Stream -> three messages b"<request>-0..2"
  Fail   -> NOT_FOUND "no such thing" (a trailers-only response)
Usage: server.py CERT_CHAIN_PEM KEY_PEM [BIND_ADDR, default 127.0.0.1:0]; prints the bound port
on stdout."""
import sys
from concurrent import futures

import grpc


def metadata(ctx, name):
    for k, v in ctx.invocation_metadata():
        if k == name:
            return v
    return ""


def unary(req, ctx):
    ctx.set_trailing_metadata((("x-trailer", "t1"),))
    return b"auth=" + metadata(ctx, "authorization").encode() + b";msg=" + req


def stream(req, ctx):
    for i in range(3):
        yield req + b"-" + str(i).encode()


def fail(req, ctx):
    ctx.abort(grpc.StatusCode.NOT_FOUND, "no such thing")


def ident(b):
    return b


handlers = {
    "Unary": grpc.unary_unary_rpc_method_handler(unary, ident, ident),
    "Stream": grpc.unary_stream_rpc_method_handler(stream, ident, ident),
    "Fail": grpc.unary_unary_rpc_method_handler(fail, ident, ident),
}

chain = open(sys.argv[1], "rb").read()
key = open(sys.argv[2], "rb").read()
server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Echo", handlers),))
bind = sys.argv[3] if len(sys.argv) > 3 else "127.0.0.1:0"
port = server.add_secure_port(bind, grpc.ssl_server_credentials(((key, chain),)))
server.start()
print(port, flush=True)
server.wait_for_termination()
