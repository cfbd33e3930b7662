"""A hostile HTTP server on 127.0.0.1 for fault injection: serves a directory, but by ``mode`` it

- ``silent``: accepts the connection and never answers;
- ``half``: sends the headers and half of the body, then closes;
- ``norange``: ignores ``Range`` and answers every GET with the whole file (200);
- ``honest``: serves files and byte ranges correctly (206).
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path


class HostileServer:
    """``with HostileServer(root, mode) as url:`` a server in a thread; ``url`` is ``http://127.0.0.1:PORT``."""

    def __init__(self, root: Path, mode: str):
        self.root, self.mode = Path(root), mode
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.open: list[socket.socket] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept() (close alone does not)
        except OSError:
            pass
        self.sock.close()
        for c in self.open:
            try:
                c.close()
            except OSError:
                pass
        self.thread.join(timeout=5)

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.open.append(conn)
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        try:
            while not self.stop.is_set():
                request = b""
                while b"\r\n\r\n" not in request:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    request += chunk
                if self.mode == "silent":
                    self.stop.wait(120)
                    return
                head, *lines = request.decode("latin-1").split("\r\n")
                method, path, _ = head.split(" ", 2)
                headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines if ln)}
                file = self.root / path.lstrip("/").split("?")[0]
                if not file.is_file():
                    conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                    continue
                data = file.read_bytes()
                status = "200 OK"
                rng = headers.get("range")
                if rng and self.mode in ("honest", "half"):
                    a, _, b = rng.removeprefix("bytes=").partition("-")
                    start, end = int(a), (int(b) if b else len(data) - 1)
                    status, data = "206 Partial Content", data[start:end + 1]
                body = b"" if method == "HEAD" else data
                conn.sendall(f"HTTP/1.1 {status}\r\nContent-Length: {len(data)}\r\n"
                             f"Accept-Ranges: bytes\r\n\r\n".encode() + (body[:len(body) // 2] if self.mode == "half"
                                                                         else body))
                if self.mode == "half" and body:
                    conn.close()
                    return
        except OSError:
            return
