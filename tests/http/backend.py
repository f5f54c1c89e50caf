"""An HTTP/1.1 backend for proxy tests, with behaviours a test can ask for by path.

Usage: backend.py NAME HOST:PORT [STATUS]
(With STATUS, every request is answered with it: a backend that is broken.)
With BACKEND_TLS_CERT and BACKEND_TLS_KEY (PEM files) it serves HTTPS; with BACKEND_TLS_CLIENT_CA
as well it requires a client certificate issued by that CA, and answers with its subject's CN
as "client_cn".
Prints "ready" once serving; stops on SIGTERM. Every answer is JSON:
{"name": NAME, "method": ..., "path": ..., "headers": {...}, "body_bytes": N, "count": N}.

Paths:
  /status/CODE      answer with that status (?length: a 204's content-length anyway)
  /delay/MS         wait MS milliseconds, then answer 200
  /flaky/N          answer 503 to the first N requests this backend sees on that path, then 200
  /grpc-status/N    answer 200 with `grpc-status: N` (a gRPC trailers-only shape)
  Upgrade: websocket  switch protocols (101, with Sec-WebSocket-Accept), then echo every byte
  anything else     200
"""
import base64
import hashlib
import json
import os
import signal
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NAME = sys.argv[1]
ALWAYS = int(sys.argv[3]) if len(sys.argv) > 3 else None
COUNTS = {}
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def upgrade(self):
        key = self.headers.get("sec-websocket-key", "")
        accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
        self.send_response(101)
        self.send_header("upgrade", "websocket")
        self.send_header("connection", "Upgrade")
        self.send_header("sec-websocket-accept", accept)
        self.end_headers()
        self.wfile.flush()
        conn = self.connection
        while True:
            data = conn.recv(4096)
            if not data:
                break
            conn.sendall(data)
        self.close_connection = True

    def answer(self):
        if self.headers.get("upgrade", "").lower() == "websocket":
            return self.upgrade()
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        with LOCK:
            COUNTS[self.path] = COUNTS.get(self.path, 0) + 1
            count = COUNTS[self.path]
        parts = self.path.split("?")[0].strip("/").split("/")
        status = 200
        extra = {}
        if len(parts) == 2 and parts[0] == "status":
            status = int(parts[1])
        elif len(parts) == 2 and parts[0] == "delay":
            time.sleep(int(parts[1]) / 1000.0)
        elif len(parts) == 2 and parts[0] == "flaky":
            if count <= int(parts[1]):
                status = 503
        elif len(parts) == 2 and parts[0] == "grpc-status":
            extra["grpc-status"] = parts[1]
        if ALWAYS is not None:
            status = ALWAYS
        payload = json.dumps({
            "name": NAME,
            "method": self.command,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body_bytes": len(body),
            "count": count,
            "client_cn": client_cn(self.connection),
        }).encode()
        # 204 and 304 answers have no content (RFC 9110 §15.3.5, §15.4.5).
        bodiless = status in (204, 304)
        self.send_response(status)
        self.send_header("content-type", "application/json")
        # `?length`: a content-length on a bodiless answer anyway, as some servers send.
        if not bodiless or "length" in self.path.partition("?")[2].split("&"):
            self.send_header("content-length", str(len(payload)))
        for k, v in extra.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD" and not bodiless:
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = answer


def client_cn(connection):
    """The common name of a verified TLS client's certificate, if any."""
    peer = connection.getpeercert() if hasattr(connection, "getpeercert") else None
    for rdn in (peer or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return value
    return None


def main():
    host, port = sys.argv[2].rsplit(":", 1)
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer.request_queue_size = 256
    server = ThreadingHTTPServer((host, int(port)), Handler)
    if os.environ.get("BACKEND_TLS_CERT"):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(os.environ["BACKEND_TLS_CERT"], os.environ["BACKEND_TLS_KEY"])
        if os.environ.get("BACKEND_TLS_CLIENT_CA"):
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(os.environ["BACKEND_TLS_CLIENT_CA"])
        server.socket = context.wrap_socket(server.socket, server_side=True)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
