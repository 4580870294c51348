#!/usr/bin/env python3
"""An HMAC-verifying HTTPS upstream for the hmac_sign end-to-end tests.

An independent implementation (Python's hmac/hashlib/base64): for every request it rebuilds
the string to sign from what arrived on the wire (raw request target, Host, body bytes, the
timestamp header), recomputes the HMAC with the scheme's key, algorithm and encodings, and
answers 200 when the signature header matches, 401 otherwise.

The scheme is chosen by the first path segments: /s/<scheme>/... . Schemes come from a JSON
file (see the Rust test for the fields). Prints "READY <port>" once listening, then one
"REQ <method> <target>" line per request received.

Usage: hmac_upstream.py --cert CERT.pem --key KEY.pem --schemes SCHEMES.json
"""

import argparse
import base64
import binascii
import datetime
import hashlib
import hmac
import json
import re
import ssl
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ALGORITHMS = {"sha256": hashlib.sha256, "sha512": hashlib.sha512, "sha1": hashlib.sha1}

TIMESTAMP_SHAPES = {
    "unix_seconds": re.compile(r"^\d{10}$"),
    "unix_millis": re.compile(r"^\d{13}$"),
    "unix_nanos": re.compile(r"^\d{19}$"),
    "rfc3339": re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$"),
}


def timestamp_seconds(fmt, ts):
    if fmt == "unix_seconds":
        return int(ts)
    if fmt == "unix_millis":
        return int(ts) / 1e3
    if fmt == "unix_nanos":
        return int(ts) / 1e9
    parsed = datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ")
    return parsed.replace(tzinfo=datetime.timezone.utc).timestamp()


def decode_key(encoding, value):
    if encoding == "raw":
        return value.encode()
    if encoding == "base64":
        return base64.b64decode(value, validate=True)
    if encoding == "hex":
        return binascii.unhexlify(value)
    raise ValueError(encoding)


def encode_signature(encoding, digest):
    if encoding == "base64":
        return base64.b64encode(digest).decode()
    return digest.hex()


def string_to_sign(recipe, ts, method, target, host, body, creds):
    """The vendor "prehash" definitions, written out longhand from the raw request."""
    path, _, query = target.partition("?")
    path_with_query = target if query else path
    if recipe == "ts_method_pathq_body":
        return ts.encode() + method.encode() + path_with_query.encode() + body
    if recipe == "ts_method_path_key_body":
        return ts.encode() + method.encode() + path.encode() + creds["key"].encode() + body
    if recipe == "all_fields":
        head = "|".join([ts, method, path, path_with_query, query, host])
        return head.encode() + b"|" + body
    raise ValueError(recipe)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    schemes = {}

    def log_message(self, *args):  # keep stderr quiet; stdout carries REQ lines
        pass

    def answer(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return out, "chunked"
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length", "0"))
        return self.rfile.read(n), n

    def handle_any(self):
        print(f"REQ {self.command} {self.path}", flush=True)
        body, framing = self.read_body()
        parts = self.path.split("/")
        scheme = self.schemes.get(parts[2]) if len(parts) > 2 and parts[1] == "s" else None
        received = list(self.headers.keys())
        if scheme is None:
            return self.answer(404, {"ok": False, "why": "no scheme", "received": received})
        why = self.verify(scheme, body)
        payload = {
            "ok": why is None,
            "why": why,
            "received": received,
            "framing": framing,
            "body_len": len(body),
        }
        return self.answer(200 if why is None else 401, payload)

    def verify(self, scheme, body):
        ts = self.headers.get(scheme["ts_header"])
        if ts is None:
            return "no timestamp header"
        fmt = scheme["timestamp_format"]
        if not TIMESTAMP_SHAPES[fmt].match(ts):
            return f"timestamp {ts!r} is not {fmt}"
        if abs(time.time() - timestamp_seconds(fmt, ts)) > 300:
            return "timestamp is stale"
        host = self.headers.get("Host", "")
        host = host.rsplit(":", 1)[0] if ":" in host and not host.startswith("[") else host
        msg = string_to_sign(
            scheme["recipe"], ts, self.command, self.path, host, body, scheme["creds"]
        )
        key = decode_key(scheme["key_encoding"], scheme["creds"]["secret"])
        digest = hmac.new(key, msg, ALGORITHMS[scheme["algorithm"]]).digest()
        sig = encode_signature(scheme["output_encoding"], digest)
        expected = scheme.get("sig_template", "{sig}").format(sig=sig, **scheme["creds"])
        got = self.headers.get_all(scheme["sig_header"]) or []
        if len(got) != 1:
            return f"expected one {scheme['sig_header']} header, got {len(got)}"
        if not hmac.compare_digest(got[0], expected):
            return "signature mismatch"
        for name, cred in scheme.get("cred_headers", {}).items():
            if self.headers.get(name) != scheme["creds"][cred]:
                return f"header {name} does not carry credential {cred}"
        return None

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = handle_any


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--schemes", required=True)
    args = ap.parse_args()
    with open(args.schemes) as f:
        Handler.schemes = json.load(f)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.cert, args.key)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print(f"READY {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
