"""A gRPC server that answers `/strait.test.Echo/Name` with its own name.

Usage: backend.py NAME HOST:PORT [MAX_CONNECTION_AGE_MS]
With a maximum connection age, each connection is recycled after it: a graceful GOAWAY, then the
close once its calls are done. Prints "ready" once serving; stops on SIGTERM. No generated code:
raw bytes in and out.
"""
import signal
import sys
from concurrent import futures

import grpc


def main():
    name, address = sys.argv[1], sys.argv[2]

    def reply(request, context):
        return name.encode()

    handler = grpc.method_handlers_generic_handler(
        "strait.test.Echo",
        {"Name": grpc.unary_unary_rpc_method_handler(reply)},
    )
    options = []
    if len(sys.argv) > 3:
        options.append(("grpc.max_connection_age_ms", int(sys.argv[3])))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), options=options)
    server.add_generic_rpc_handlers((handler,))
    if server.add_insecure_port(address) == 0:
        print(f"cannot listen on {address}", file=sys.stderr, flush=True)
        sys.exit(1)
    server.start()
    signal.signal(signal.SIGTERM, lambda *_: server.stop(0))
    print("ready", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
