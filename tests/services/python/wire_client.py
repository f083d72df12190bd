"""Raw-socket HTTP/1.1 client for the write-side tests: sends requests in the shapes that an
sk_msg editor must survive (bodies that look like headers or like a request, bodies in later
sends, keep-alive, pipelining, a head split over two sends, a span id that is not hex) and prints what the server saw.

Usage: python3 wire_client.py PORT GO_FILE   (starts when GO_FILE exists, prints one JSON object)
"""

import hashlib
import json
import os
import socket
import sys
import time

PORT = int(sys.argv[1])
GO = sys.argv[2]
TRACE = "463ac35c9f6413ad"
SPAN = "a2fb4a1d1a96d312"
CONTEXT = f"x-b3-traceid: {TRACE}\r\nx-b3-spanid: {SPAN}\r\nx-b3-sampled: 1\r\n"


def connect():
    s = socket.create_connection(("127.0.0.1", PORT))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s, s.makefile("rb")


def read_response(f):
    status = f.readline()
    length = 0
    while True:
        line = f.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.decode().partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    return status.split(b" ")[1].decode(), f.read(length)


def head(method, path, length=None):
    h = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{PORT}\r\n{CONTEXT}"
    if length is not None:
        h += f"Content-Length: {length}\r\n"
    return (h + "\r\n").encode()


def main():
    while not os.path.exists(GO):
        time.sleep(0.05)
    out = {}
    s, f = connect()
    # A body that quotes context headers, a b3 header and a whole request head, bigger than
    # the part of a send the sk_msg program examines.
    body = (
        b"x-b3-spanid: 1111111111111111\r\n"
        + f"b3: {TRACE}-{SPAN}-1\r\n".encode()
        + b"GET /not-a-request HTTP/1.1\r\nx-b3-spanid: 2222222222222222\r\n\r\n"
        + os.urandom(2048).hex().encode()
    )
    out["body_sha256"] = hashlib.sha256(body).hexdigest()
    # 1. head and body in one send.
    s.sendall(head("POST", "/sha256", len(body)) + body)
    out["one_send"] = read_response(f)[1].decode()
    # 2. head, then the body in three later sends, the first starting like a request.
    s.sendall(head("POST", "/sha256", len(body)))
    time.sleep(0.05)
    tail = body[body.index(b"GET /not-a-request"):]
    first = body[: body.index(b"GET /not-a-request")]
    for part in (first, tail[:100], tail[100:]):
        s.sendall(part)
        time.sleep(0.02)
    out["later_sends"] = read_response(f)[1].decode()
    # 3. keep-alive: two requests on the same connection, one after the other.
    keepalive = []
    for _ in range(2):
        s.sendall(head("GET", "/headers"))
        keepalive.append(json.loads(read_response(f)[1]))
    out["keepalive"] = keepalive
    # 4. pipelined: two requests in one send.
    s.sendall(head("GET", "/headers") + head("GET", "/headers"))
    out["pipelined"] = [json.loads(read_response(f)[1]) for _ in range(2)]
    # 5. a head split over two sends.
    whole = head("GET", "/headers")
    cut = whole.index(b"x-b3-spanid") + 5
    s.sendall(whole[:cut])
    time.sleep(0.1)
    s.sendall(whole[cut:])
    out["split"] = json.loads(read_response(f)[1])
    # 6. a span id of the right length that is not hex: left as the app wrote it.
    garbage = head("GET", "/headers?garbage=1").replace(SPAN.encode(), b"zz" + SPAN[2:].encode())
    s.sendall(garbage)
    out["garbage"] = json.loads(read_response(f)[1])
    s.close()
    print(json.dumps(out), flush=True)


main()
