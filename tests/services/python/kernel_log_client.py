"""Client for the --kernel-log test.

Waits for the file named by its second argument (the agent is attached by then, so its sockets
pass the write side's connect hook), then opens two connections to the port given first: on one
it sends bytes that are no HTTP/1 (the start of a TLS ClientHello), on the other a request head
without any trace context, whose answer it prints (its status line).
"""

import os
import socket
import sys
import time

port, go = int(sys.argv[1]), sys.argv[2]
deadline = time.time() + 30
while not os.path.exists(go):
    if time.time() > deadline:
        sys.exit("the go file never appeared")
    time.sleep(0.02)

with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
    s.sendall(bytes.fromhex("1603010200010001fc0303") + b"\xab" * 32)
    s.shutdown(socket.SHUT_WR)
    try:
        s.recv(4096)
    except OSError:
        pass

with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
    s.sendall(b"GET /plain HTTP/1.1\r\nHost: kernel-log\r\nConnection: close\r\n\r\n")
    answer = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        answer += chunk
print(answer.split(b"\r\n", 1)[0].decode(errors="replace"))
