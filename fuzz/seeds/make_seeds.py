#!/usr/bin/env python3
"""Writes the seed corpora in fuzz/corpus/ (run from the repository root). Stream targets take a
first byte that seeds how the input is cut into reads (0: one read)."""
import os, struct

OUT = "fuzz/corpus"

def put(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)

# --- config_yaml
for src in ["agent/src/config/testdata/full_example.yaml"]:
    put("config_yaml", "full_example", open(src, "rb").read())
put("config_yaml", "dns_proxy", b"""dns:
  proxy_ip: "10.0.0.1"
  passthrough: ["*.internal"]
  records:
    - name: "custom.local"
      type: A
      value: "10.0.0.5"
proxy:
  http_listen: ":80"
  max_request_body_bytes: 1048576
transforms:
  - name: allowlist
    config:
      domains: ["api.example.com", "*.example.org"]
      cidrs: ["10.0.0.0/8"]
""")
put("config_yaml", "bad", b"proxy:\n  http_listen: 80\n  nope: 1\ntransforms:\n  - name: what\n")

# --- client_hello
def ext(t, body):
    return struct.pack(">HH", t, len(body)) + body
def client_hello(sni, split_records=False):
    name = sni.encode()
    sni_ext = ext(0, struct.pack(">H", len(name) + 3) + b"\x00" + struct.pack(">H", len(name)) + name)
    exts = sni_ext
    exts += ext(10, b"\x00\x04\x00\x1d\x00\x17")                    # supported_groups
    exts += ext(13, b"\x00\x04\x04\x03\x08\x04")                    # signature_algorithms
    exts += ext(43, b"\x04\x03\x04\x03\x03")                        # supported_versions
    exts += ext(51, b"\x00\x26\x00\x1d\x00\x20" + bytes(range(32))) # key_share x25519
    exts += ext(16, b"\x00\x0c\x02h2\x08http/1.1")                  # ALPN
    body = b"\x03\x03" + bytes(32) + b"\x20" + bytes(range(32))
    body += b"\x00\x04\x13\x01\x13\x02" + b"\x01\x00" + struct.pack(">H", len(exts)) + exts
    hs = b"\x01" + struct.pack(">I", len(body))[1:] + body
    if split_records:
        a, b = hs[:40], hs[40:]
        return (b"\x16\x03\x01" + struct.pack(">H", len(a)) + a +
                b"\x16\x03\x01" + struct.pack(">H", len(b)) + b)
    return b"\x16\x03\x01" + struct.pack(">H", len(hs)) + hs
put("client_hello", "whole", b"\x00" + client_hello("api.example.com"))
put("client_hello", "segments", b"\x07" + client_hello("Sni.Test"))
put("client_hello", "two_records", b"\x03" + client_hello("x.example", True))

# --- dns_request
def qname(n):
    return b"".join(bytes([len(l)]) + l.encode() for l in n.split(".") if l) + b"\x00"
def query(ident, qs, edns=False, opcode=0):
    flags = 0x0100 | (opcode << 11)
    msg = struct.pack(">HHHHHH", ident, flags, len(qs), 0, 0, 1 if edns else 0)
    for n, t in qs:
        msg += qname(n) + struct.pack(">HH", t, 1)
    if edns:
        msg += b"\x00" + struct.pack(">HHIH", 41, 1232, 0, 0)
    return msg
put("dns_request", "a_static", query(1, [("static.test", 1)]))
put("dns_request", "chain_aaaa", query(2, [("Chain.Test", 28)], edns=True))
put("dns_request", "loop", query(3, [("loop-a.test", 1)]))
put("dns_request", "intercepted_multi", query(4, [("api.example.com", 1), ("alias.test", 5), ("x.y", 65)]))
put("dns_request", "notify", query(5, [("a.test", 6)], opcode=4))

# --- socks5
put("socks5", "domain", b"\x00\x05\x01\x00\x05\x01\x00\x03\x0bexample.com\x01\xbb")
put("socks5", "ipv4", b"\x05\x05\x02\x00\x02\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x50")
put("socks5", "ipv6_bind", b"\x00\x05\x01\x00\x05\x02\x00\x04" + bytes(15) + b"\x01\x00\x50")
put("socks5", "no_method", b"\x00\x05\x01\x02")

# --- connect_head
put("connect_head", "connect", b"\x00CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n\x16\x03\x01")
put("connect_head", "connect_v6", b"\x05CONNECT [::1]:8443 HTTP/1.1\r\nProxy-Authorization: Basic eA==\r\n\r\nGET / HTTP/1.1\r\n")
put("connect_head", "absolute_get", b"\x00GET http://example.com/a?b HTTP/1.1\r\nHost: example.com\r\n\r\n")
put("connect_head", "bad_target", b"\x02CONNECT user@host:1 HTTP/1.1\r\n\r\n")

# --- http1_head
put("http1_head", "get", b"\x00GET /path%20x?q=1 HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: t\r\n\r\n")
put("http1_head", "tls_sni", b"\x01GET / HTTP/1.1\r\nHost: fuzz.example:443\r\n\r\n")
put("http1_head", "chunked_post", b"\x04POST /v1 HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
put("http1_head", "websocket", b"\x06GET /ws HTTP/1.1\r\nHost: ws.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
put("http1_head", "absolute", b"\x02GET http://b.test:8080/x HTTP/1.1\r\nHost: b.test:8080\r\nContent-Length: 3\r\n\r\nabc")
put("http1_head", "h2c_preface", b"\x00PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")

# --- template
put("template", "value", b"Bearer {{ .Value }}")
put("template", "base64", b'{{ base64 "user:" .Value }} {{ .Body | base64 }}')
put("template", "fields", b"{{ .Method }} {{ .Path }} {{ .Header.X }} {{ print .Env.HOME \"x\" }}")

# --- sigv4_scope
put("sigv4_scope", "header", b"AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20240101/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-date, Signature=abc\nprefix=a&b=c")
put("sigv4_scope", "presigned", b"\nX-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AK%2F20240101%2Feu-west-1%2Fsqs%2Faws4_request&X-Amz-Date=20240101T000000Z&list-type=2")

# --- mcp_jsonrpc
put("mcp_jsonrpc", "call", b'\x00{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"create_issue","arguments":{"owner":"ironsh","repo":"a","title":"[bot] x","labels":["x"]}}}')
put("mcp_jsonrpc", "batch", b'\x04[{"jsonrpc":"2.0","id":"a","method":"tools/list"},{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"rm"}},{"jsonrpc":"2.0","method":"notifications/initialized"}]')
put("mcp_jsonrpc", "list_response", b'\x01{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"search"},{"name":"rm"}]}}')
put("mcp_jsonrpc", "sse_response", b'\x02event: message\ndata: {"jsonrpc":"2.0","id":"a","result":{"tools":[{"name":"rm"}]}}\n\ndata: {"jsonrpc":"2.0","id":9,\ndata: "result":{}}\n\n')

# --- postgres_wire
def startup(params):
    body = struct.pack(">I", 196608) + b"".join(k + b"\0" + v + b"\0" for k, v in params) + b"\0"
    return struct.pack(">I", len(body) + 4) + body
def msg(tag, body):
    return tag + struct.pack(">I", len(body) + 4) + body
ssl = struct.pack(">II", 8, 80877103)
client = ssl + startup([(b"user", b"app"), (b"database", b"db")]) + msg(b"p", b"secret\0")
client += msg(b"Q", b"SELECT 1; SET ROLE admin\0") + msg(b"P", b"s1\0SET search_path = x\0\0\0")
client += msg(b"B", b"\0s1\0\0\0\0\0\0\0") + msg(b"E", b"\0\0\0\0\0") + msg(b"S", b"")
server = msg(b"E", b"SERROR\0C42601\0Msyntax error at or near \"iron_proxy_refused_00f1e2d3_1\"\0\0")
server += msg(b"Z", b"I")
pad = (-len(server)) % 8
server = server + bytes(pad)
put("postgres_wire", "session", b"\x00" + bytes([len(server) // 8]) + client + server)
put("postgres_wire", "cancel", b"\x03\x00" + struct.pack(">IIII", 16, 80877102, 1, 2))
