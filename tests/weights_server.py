"""A real HTTP server on 127.0.0.1 that serves generated weight files to the fetch tests (no
internet): byte ranges as a file host does (``Range: bytes=N-`` -> 206), every request recorded,
and, on demand, a connection dropped part-way through a file (optionally held open until the test
releases it, so a test can kill the downloading process at a known byte)."""

import hashlib
import io
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def hashed_name(stem: str, data: bytes, suffix: str = ".pth") -> str:
    """OpenMMLab's and torch.hub's naming: ``<stem>-<first 8 hex digits of the SHA-256>.pth``."""
    return f"{stem}-{hashlib.sha256(data).hexdigest()[:8]}{suffix}"


def checkpoint_bytes(state: dict) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


class WeightsServer:
    """``files``: name -> bytes; ``requests``: (name, Range header or None) per GET;
    ``cut(name, after, hold)``: the next GET of ``name`` sends ``after`` bytes, waits for ``hold``
    (a threading.Event) when given, then closes the connection."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.cuts: dict[str, tuple[int, threading.Event | None]] = {}
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/weights/{name}"

    def cut(self, name: str, after: int, hold: threading.Event | None = None) -> None:
        self.cuts[name] = (after, hold)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self):
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                name = self.path.rsplit("/", 1)[-1]
                ranged = self.headers.get("Range")
                owner.requests.append((name, ranged))
                data = owner.files.get(name)
                if data is None:
                    self.send_error(404)
                    return
                start = int(ranged.removeprefix("bytes=").split("-")[0]) if ranged else 0
                if start >= len(data):
                    self.send_error(416)
                    return
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                after, hold = owner.cuts.pop(name, (None, None))
                if after is None:
                    self.wfile.write(data[start:])
                    return
                self.wfile.write(data[start:start + after])
                self.wfile.flush()
                if hold is not None:
                    hold.wait(timeout=300)
                self.close_connection = True

        return Handler
