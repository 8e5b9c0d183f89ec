"""A loopback HTTP server for offline download tests: plain files by path, and a hub-like layout.

The hub layout answers ``HEAD``/``GET /<repo>/resolve/<revision>/<file>`` (revision ``main``
or ``COMMIT``; any other is "not found", as the hub says it) with the headers
huggingface_hub reads (``X-Repo-Commit``, ``ETag``, ``Content-Length``), so
``hf_hub_download`` runs its real code path against 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import http.server
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

COMMIT = "0123456789abcdef0123456789abcdef01234567"
_CHUNK = 64 * 1024


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes]
    requests: list[str]
    seconds_per_chunk: list[float]  # one shared, changeable value: a slow link for kill and race tests

    def log_message(self, *args: object) -> None:  # keep test output clean
        pass

    def _lookup(self) -> tuple[bytes | None, dict[str, str]]:
        self.requests.append(f"{self.command} {self.path}")
        path = self.path.split("?")[0]
        match = re.fullmatch(r"/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)", path)
        key = f"{match['repo']}/{match['file']}" if match else path.lstrip("/")
        body = self.files.get(key)
        if match and match["rev"] not in ("main", COMMIT):
            return None, {"X-Error-Code": "RevisionNotFound"}
        headers = {}
        if body is not None:
            headers = {"Content-Length": str(len(body)), "ETag": f'"{hashlib.sha256(body).hexdigest()}"',
                       "X-Repo-Commit": COMMIT, "Content-Type": "application/octet-stream"}
        return body, headers

    def _answer(self, send_body: bool) -> None:
        body, headers = self._lookup()
        if body is None:
            self.send_response(404)
            self.send_header("X-Error-Code", headers.get("X-Error-Code", "EntryNotFound"))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if send_body:
            for start in range(0, len(body), _CHUNK):
                time.sleep(self.seconds_per_chunk[0])
                self.wfile.write(body[start:start + _CHUNK])

    def do_HEAD(self) -> None:  # noqa: N802 (http.server's naming)
        self._answer(send_body=False)

    def do_GET(self) -> None:  # noqa: N802
        self._answer(send_body=True)


class Server:
    """A running loopback server; ``files`` maps ``repo/file`` or a plain path to bytes."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []
        self._seconds_per_chunk = [0.0]
        handler = type("Handler", (_Handler,), {"files": self.files, "requests": self.requests,
                                                 "seconds_per_chunk": self._seconds_per_chunk})
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def throttle(self, seconds_per_chunk: float) -> None:
        """Pause this long before each 64 KiB of every body sent from now on (0: full speed)."""
        self._seconds_per_chunk[0] = seconds_per_chunk

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@contextmanager
def serving() -> Iterator[Server]:
    server = Server()
    try:
        yield server
    finally:
        server.stop()
