"""A proxyless gRPC client: resolves `xds:///` targets through the xDS server named in
GRPC_XDS_BOOTSTRAP and calls `/strait.test.Echo/Name`.

Usage: client.py TARGET --calls N [--header k=v ...]      prints {"answers": {...}, "errors": {...}}
       client.py TARGET --seconds S [--interval MS] ...    prints one JSON line per call:
                                                           {"t": seconds, "answer": name | null, "error": text | null}
The first call waits for xDS resolution (up to 20 s).
"""
import argparse
import json
import sys
import time

import grpc


def main():
    p = argparse.ArgumentParser()
    p.add_argument("target")
    p.add_argument("--calls", type=int)
    p.add_argument("--seconds", type=float)
    p.add_argument("--interval", type=float, default=10.0, help="milliseconds between calls in --seconds mode")
    p.add_argument("--header", action="append", default=[])
    p.add_argument("--timeout", type=float, default=5.0)
    p.add_argument("--authority", help="the :authority to send (a plain target through a proxy)")
    args = p.parse_args()
    metadata = [tuple(h.split("=", 1)) for h in args.header]
    options = [("grpc.default_authority", args.authority)] if args.authority else []
    channel = grpc.insecure_channel(args.target, options=options)
    call = channel.unary_unary("/strait.test.Echo/Name")
    call(b"", timeout=20, metadata=metadata, wait_for_ready=True)  # resolution and first connection

    def one():
        try:
            return call(b"", timeout=args.timeout, metadata=metadata).decode(), None
        except grpc.RpcError as e:
            return None, f"{e.code().name}: {e.details()}"

    if args.calls is not None:
        answers, errors = {}, {}
        for _ in range(args.calls):
            answer, error = one()
            if answer is not None:
                answers[answer] = answers.get(answer, 0) + 1
            else:
                errors[error] = errors.get(error, 0) + 1
        print(json.dumps({"answers": answers, "errors": errors}), flush=True)
    else:
        print(json.dumps({"started": True}), flush=True)
        start = time.monotonic()
        while time.monotonic() - start < args.seconds:
            answer, error = one()
            print(json.dumps({"t": round(time.monotonic() - start, 4), "answer": answer, "error": error}), flush=True)
            time.sleep(args.interval / 1000.0)


if __name__ == "__main__":
    main()
