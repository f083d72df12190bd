"""gRPC demo service and client for the tracer's integration tests: Python grpcio, no tracing library.

The service is demo.Greeter, registered with a generic handler and no (de)serializers, so messages
are raw bytes and neither protoc nor protobuf is needed; the wire is plain `application/grpc`:
  - SayHello (unary): NAME -> "hello NAME"; `missing` -> NOT_FOUND, `fail` -> INTERNAL,
    `metadata` -> the metadata the call arrived with, one "key=value" line each (sorted);
  - Count (server streaming): N (decimal) -> N messages "1" .. "N".
Like a mesh app, with DOWNSTREAM set each call first makes the same call downstream
(`grpc://HOST:PORT`) or a GET (`http://...`), forwarding the incoming B3/W3C headers as outgoing
metadata; a downstream failure is answered with the downstream's status, and a SayHello with a
gRPC downstream is answered with the downstream's reply (so `metadata` shows what reached the last
hop of a chain).

Usage (grpcio is in the venv `cargo xtask setup` makes: target/tools/venv/bin/python):
  grpc_demo.py server PORT            (env DOWNSTREAM)
  grpc_demo.py client --target HOST:PORT --method SayHello|Count [--name X] [--count N]
                      [--metadata k=v ...] [--repeat K] [--interval-ms MS]
The client makes K calls (0: until SIGTERM) on one channel (one HTTP/2 connection) and prints one
JSON line per call: {"call":I,"status":CODE,"message":"...","responses":["..."]}, then
`client done: K calls`; `{seq}` in a metadata value becomes the call number as 8 hex digits.
"""

import argparse
import json
import os
import signal
import sys
import threading
import urllib.error
import urllib.request
from concurrent import futures

import grpc

PROPAGATED = (
    "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags",
    "b3", "traceparent", "tracestate",
)
SAY_HELLO = "/demo.Greeter/SayHello"
COUNT = "/demo.Greeter/Count"


def describe(metadata):
    """The application metadata of a call, one sorted "key=value" line each."""
    skip = ("user-agent", "content-type", "te", "accept-encoding")
    lines = sorted(
        f"{k}={v}" for k, v in metadata
        if not k.startswith((":", "grpc-")) and k not in skip
    )
    return "\n".join(lines)


class Greeter:
    def __init__(self, downstream):
        self.channel = None
        self.http = ""
        if downstream.startswith("grpc://"):
            self.channel = grpc.insecure_channel(downstream[len("grpc://"):])
        elif downstream:
            self.http = downstream

    def downstream(self, context, method, request):
        """Makes the call's downstream call, if any, and returns a gRPC downstream's SayHello
        reply; aborts the call with a downstream failure."""
        forwarded = [(k, v) for k, v in context.invocation_metadata() if k in PROPAGATED]
        if self.channel is not None:
            try:
                if method == COUNT:
                    for _ in self.channel.unary_stream(COUNT)(request, metadata=forwarded, timeout=10):
                        pass
                else:
                    return self.channel.unary_unary(SAY_HELLO)(request, metadata=forwarded, timeout=10)
            except grpc.RpcError as e:
                context.abort(e.code(), e.details())
        elif self.http:
            req = urllib.request.Request(self.http, headers=dict(forwarded))
            try:
                with urllib.request.urlopen(req, timeout=10) as resp:
                    resp.read()
            except urllib.error.HTTPError as e:
                context.abort(grpc.StatusCode.INTERNAL, f"downstream answered HTTP {e.code}")
            except OSError as e:
                context.abort(grpc.StatusCode.UNAVAILABLE, str(e))
        return None

    def say_hello(self, request, context):
        reply = self.downstream(context, SAY_HELLO, request)
        if reply is not None:
            return reply
        if request == b"missing":
            context.abort(grpc.StatusCode.NOT_FOUND, "no greeting for missing")
        if request == b"fail":
            context.abort(grpc.StatusCode.INTERNAL, "greeting failed")
        if request == b"metadata":
            return describe(context.invocation_metadata()).encode()
        return b"hello " + request

    def count(self, request, context):
        self.downstream(context, COUNT, request)
        try:
            n = int(request)
        except ValueError:
            n = -1
        if n < 0:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"count {request!r} is not a number")
        for i in range(1, n + 1):
            yield str(i).encode()


def server(port):
    greeter = Greeter(os.environ.get("DOWNSTREAM", ""))
    handler = grpc.method_handlers_generic_handler("demo.Greeter", {
        "SayHello": grpc.unary_unary_rpc_method_handler(greeter.say_hello),
        "Count": grpc.unary_stream_rpc_method_handler(greeter.count),
    })
    srv = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    srv.add_generic_rpc_handlers((handler,))
    if srv.add_insecure_port(f"127.0.0.1:{port}") == 0:
        sys.exit(f"cannot listen on 127.0.0.1:{port}")
    srv.start()
    print(f"listening on {port}", flush=True)
    srv.wait_for_termination()


def client(argv):
    p = argparse.ArgumentParser(prog="grpc_demo.py client")
    p.add_argument("--target", required=True)
    p.add_argument("--method", choices=("SayHello", "Count"), default="SayHello")
    p.add_argument("--name", default="world")
    p.add_argument("--count", type=int, default=3)
    p.add_argument("--metadata", action="append", default=[])
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--interval-ms", type=int, default=0)
    args = p.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    channel = grpc.insecure_channel(args.target)
    say_hello = channel.unary_unary(SAY_HELLO)
    count = channel.unary_stream(COUNT)
    calls = 0
    while args.repeat == 0 or calls < args.repeat:
        i = calls + 1
        if stop.wait(args.interval_ms / 1000 if i > 1 else 0):
            break
        metadata = []
        for kv in args.metadata:
            k, _, v = kv.partition("=")
            metadata.append((k, v.replace("{seq}", f"{i:08x}")))
        result = {"call": i, "status": 0, "message": "", "responses": []}
        try:
            if args.method == "Count":
                for m in count(str(args.count).encode(), metadata=metadata, timeout=10):
                    result["responses"].append(m.decode())
            else:
                result["responses"].append(
                    say_hello(args.name.encode(), metadata=metadata, timeout=10).decode())
        except grpc.RpcError as e:
            result["status"] = e.code().value[0]
            result["message"] = e.details() or ""
        print(json.dumps(result, separators=(",", ":")), flush=True)
        calls = i
    print(f"client done: {calls} calls", flush=True)
    channel.close()


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "server":
        server(int(sys.argv[2]))
    elif len(sys.argv) >= 2 and sys.argv[1] == "client":
        client(sys.argv[2:])
    else:
        sys.exit("usage: grpc_demo.py server PORT | grpc_demo.py client --target HOST:PORT ...")


if __name__ == "__main__":
    main()
