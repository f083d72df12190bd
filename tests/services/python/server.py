"""Demo HTTP service for the tracer's integration tests: Python http.server, no tracing library.

Usage: python3 server.py [PORT]   (else env PORT); env DOWNSTREAM = base URL used by /call/<path>.
HTTP/1.1 with Content-Length on every non-chunked response, so clients can keep connections alive.
Like a mesh app, /call forwards the incoming B3/W3C headers unchanged to the downstream request.
/callkept does the same on one kept-alive downstream connection, shared by all its requests,
and names that connection's local port in `x-downstream-port`; it never reconnects, so a
connection the tracer broke shows as a 502.
"""

import hashlib
import http.client
import json
import os
import socket
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PROPAGATED = (
    "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags",
    "b3", "traceparent", "tracestate",
)
DOWNSTREAM = os.environ.get("DOWNSTREAM", "")
# FORWARD=none: an app that forwards no trace context at all (the write side's inject case).
FORWARD = os.environ.get("FORWARD", "context")
# PEEK=N: look at the first N bytes of each connection (MSG_PEEK) before reading them, as a
# proxy's protocol detection does.
PEEK = int(os.environ.get("PEEK", "0"))
KEPT = {"conn": None, "lock": threading.Lock()}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes (kept: the agent must assemble split responses);
    # without TCP_NODELAY each keep-alive request would wait ~40 ms for a delayed ACK.
    disable_nagle_algorithm = True

    def log_message(self, format, *args):  # noqa: A002 - keep test output quiet
        pass

    def reply(self, code, body=b"", headers=()):
        self.send_response(code)
        for name, value in headers:
            self.send_header(name, value)
        if code not in (204, 304):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if code not in (204, 304):
            self.wfile.write(body)

    def read_body(self):
        # http.server leaves request framing to the handler: support chunked as well as Content-Length.
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return body
                body += self.rfile.read(size)
                self.rfile.readline()  # CRLF after the chunk data
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_GET(self):  # noqa: N802 - http.server naming
        path = urllib.parse.urlsplit(self.path).path
        if path == "/hello":
            self.reply(200, b"hello\n")
        elif path == "/headers":
            # What the caller (e.g. a sidecar) sent, as JSON with lowercase names.
            self.reply(200, json.dumps({k.lower(): v for k, v in self.headers.items()}).encode())
        elif path == "/header-list":
            # Every header line in order, repeated names included: [[name, value], ...].
            self.reply(200, json.dumps([[k.lower(), v] for k, v in self.headers.items()]).encode())
        elif path.startswith("/status/"):
            try:
                code = int(path[len("/status/"):])
            except ValueError:
                code = 0
            if 200 <= code <= 599:
                self.reply(code, b"status %d\n" % code)
            else:
                self.reply(400, b"bad status code\n")
        elif path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(4):
                data = b"chunk %d\n" % i
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        elif path == "/setcookie":
            self.reply(200, b"cookie set\n", [("Set-Cookie", "id=s3cr3t-set-cookie")])
        elif path.startswith("/call/"):
            self.call(self.path[len("/call/"):])
        elif path.startswith("/callkept/"):
            self.call_kept(self.path[len("/callkept/"):])
        else:
            self.reply(404, b"not found\n")

    def do_POST(self):  # noqa: N802 - http.server naming
        body = self.read_body()
        path = urllib.parse.urlsplit(self.path).path
        if path == "/echo":
            self.reply(200, body)
        elif path == "/sha256":
            # What arrived, to the byte: the write side must never touch a body.
            self.reply(200, hashlib.sha256(body).hexdigest().encode())
        else:
            self.reply(404, b"not found\n")

    def call(self, rest):
        if not DOWNSTREAM:
            self.reply(500, b"DOWNSTREAM not set\n")
            return
        url = urllib.parse.urlsplit(DOWNSTREAM.rstrip("/") + "/" + rest)
        headers = {h: self.headers[h] for h in PROPAGATED if self.headers.get(h) is not None}
        if FORWARD == "none":
            headers = {}
        try:
            conn = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=10)
            conn.request("GET", url.path + ("?" + url.query if url.query else ""), headers=headers)
            resp = conn.getresponse()
            body = resp.read()
            conn.close()
        except OSError as e:
            self.reply(502, str(e).encode() + b"\n")
            return
        self.reply(resp.status, body)


    def call_kept(self, rest):
        if not DOWNSTREAM:
            self.reply(500, b"DOWNSTREAM not set\n")
            return
        url = urllib.parse.urlsplit(DOWNSTREAM.rstrip("/") + "/" + rest)
        headers = {h: self.headers[h] for h in PROPAGATED if self.headers.get(h) is not None}
        with KEPT["lock"]:
            try:
                if KEPT["conn"] is None:
                    conn = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=10)
                    conn.connect()
                    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    conn.auto_open = 0  # never reconnect behind the caller's back
                    KEPT["conn"] = conn
                conn = KEPT["conn"]
                port = conn.sock.getsockname()[1] if conn.sock else 0
                conn.request("GET", url.path + ("?" + url.query if url.query else ""), headers=headers)
                resp = conn.getresponse()
                body = resp.read()
            except (OSError, http.client.HTTPException) as e:
                self.reply(502, str(e).encode() + b"\n")
                return
        self.reply(resp.status, body, [("x-downstream-port", str(port))])


class Server(ThreadingHTTPServer):
    # socketserver's default listen backlog is 5: a burst of new connections overflows it and the
    # kernel drops SYNs, which clients retry only after a second. Real servers use far more.
    request_queue_size = 128
    daemon_threads = True

    def finish_request(self, request, client_address):
        if PEEK:
            request.recv(PEEK, socket.MSG_PEEK)
        super().finish_request(request, client_address)


def main():
    port = int(sys.argv[1] if len(sys.argv) > 1 else os.environ["PORT"])
    server = Server(("127.0.0.1", port), Handler)
    print(f"listening on {port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
