#!/usr/bin/env python3
"""A minimal OTLP/HTTP receiver for the benchmark: accepts
`POST /v1/traces` and `POST /v1/metrics` (binary protobuf), answers 200
with an empty export response, and counts the exports and bytes it received
(written to the file given as the second argument on SIGTERM). It does not
decode them: sidecar/tests/otel.rs and otel_metrics.rs check their content; this only gives
the sidecar's exporter a real peer, so the benchmark counts real exports.

Usage: otlp_sink.py PORT STATS_FILE
"""

import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STATS = {"exports": 0, "bytes": 0}
LOCK = threading.Lock()


class Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):  # noqa: N802 (http.server's naming)
        n = int(self.headers.get("content-length", "0"))
        self.rfile.read(n)
        ok = self.path in ("/v1/traces", "/v1/metrics")
        if ok:
            with LOCK:
                STATS["exports"] += 1
                STATS["bytes"] += n
        self.send_response(200 if ok else 404)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def main():
    port, stats = int(sys.argv[1]), sys.argv[2]
    server = ThreadingHTTPServer(("127.0.0.1", port), Sink)

    def stop(*_):
        with LOCK, open(stats, "w") as f:
            f.write("otlp_exports=%d\notlp_bytes=%d\n" % (STATS["exports"], STATS["bytes"]))
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    server.serve_forever()


if __name__ == "__main__":
    main()
