"""A real HTTP server on 127.0.0.1 for download tests: Range/ETag support plus scripted faults."""

from __future__ import annotations

import hashlib
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Served:
    """What the server holds and how it misbehaves; faults are consumed one request at a time per path."""

    files: dict[str, bytes] = field(default_factory=dict)
    faults: dict[str, deque[str]] = field(default_factory=lambda: defaultdict(deque))
    requests: list[tuple[str, str, str]] = field(default_factory=list)  # (method, path, Range header)
    throttle_s: float = 0.0  # sleep per 64 KiB chunk (to interrupt a download from outside)
    port: int = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def gets(self, path: str) -> list[str]:
        """The Range headers of the GET requests made for `path` ('' when none)."""
        return [range_ for method, p, range_ in self.requests if method == "GET" and p == path]


class _Handler(BaseHTTPRequestHandler):
    served: Served

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        pass

    def do_HEAD(self) -> None:
        self._respond(body=False)

    def do_GET(self) -> None:
        self._respond(body=True)

    def _respond(self, *, body: bool) -> None:
        served = self.served
        served.requests.append((self.command, self.path, self.headers.get("Range", "")))
        data = served.files.get(self.path)
        fault = served.faults[self.path].popleft() if body and served.faults[self.path] else ""
        if data is None or fault == "404":
            return self._status(404)
        if fault.startswith("status:"):
            return self._status(int(fault.split(":")[1]))
        etag = '"' + hashlib.md5(data).hexdigest() + '"'
        start = 0
        range_header = self.headers.get("Range", "")
        if_range = self.headers.get("If-Range")
        if range_header.startswith("bytes=") and fault != "ignore-range" and (if_range in (None, etag)):
            start = int(range_header[6:].split("-")[0])
            if start >= len(data):
                return self._status(416)
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.send_header("ETag", etag)
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if not body:
            return
        payload = data[start:]
        if fault.startswith("drop-after:"):  # promise everything, send a part, hang up
            payload = payload[: int(fault.split(":")[1])]
        for offset in range(0, len(payload), 1 << 16):
            self.wfile.write(payload[offset:offset + (1 << 16)])
            if served.throttle_s:
                time.sleep(served.throttle_s)
        if fault.startswith("drop-after:"):
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)

    def _status(self, code: int) -> None:
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()


def start_server(served: Served) -> ThreadingHTTPServer:
    """Serve `served` on a free port in a daemon thread; the caller shuts it down."""
    handler = type("Handler", (_Handler,), {"served": served})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    served.port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
