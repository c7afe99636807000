"""A counting proxy for the Docker engine API: listens on a unix socket, forwards every byte to
the engine's socket, and records each HTTP request (method and path) that passes.

Point a command at it with DOCKER_HOST=unix://<socket>; the count is then the number of
engine round trips the command made. Request bodies are skipped by Content-Length or by
chunked encoding, so a body is never mistaken for a request.
"""

from __future__ import annotations

import os
import socket
import threading
from urllib.parse import urlsplit

DEFAULT_UPSTREAM = "/var/run/docker.sock"


def upstream_socket() -> str:
    """The engine the proxy forwards to: DOCKER_HOST when it is a unix socket, else the default."""
    host = os.environ.get("DOCKER_HOST", "")
    if host.startswith("unix://"):
        return host[len("unix://"):]
    return DEFAULT_UPSTREAM


class EngineProxy:
    def __init__(self, listen_path: str, upstream_path: str | None = None) -> None:
        self.listen_path = listen_path
        self.upstream_path = upstream_path or upstream_socket()
        self._requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._listener: socket.socket | None = None
        self._stopping = False

    @property
    def docker_host(self) -> str:
        return f"unix://{self.listen_path}"

    def __enter__(self) -> "EngineProxy":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.listen_path)
        listener.listen(64)
        self._listener = listener
        self._spawn(self._accept_loop)

    def stop(self) -> None:
        self._stopping = True
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        for thread in self._threads:
            thread.join(timeout=5)
        try:
            os.unlink(self.listen_path)
        except FileNotFoundError:
            pass

    def take(self) -> list[tuple[str, str]]:
        """The requests seen since the last take (method, path without the query)."""
        with self._lock:
            taken, self._requests = self._requests, []
        return taken

    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.add(sock)

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                upstream.connect(self.upstream_path)
            except OSError:
                client.close()
                upstream.close()
                continue
            self._track(client)
            self._track(upstream)
            self._spawn(self._client_to_engine, client, upstream)
            self._spawn(self._copy, upstream, client)

    def _copy(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                target.sendall(data)
        except OSError:
            pass
        finally:
            _half_close(target)

    def _client_to_engine(self, client: socket.socket, upstream: socket.socket) -> None:
        parser = RequestParser(self._record)
        try:
            while True:
                data = client.recv(65536)
                if not data:
                    break
                upstream.sendall(data)
                parser.feed(data)
        except OSError:
            pass
        finally:
            _half_close(upstream)

    def _record(self, method: str, target: str) -> None:
        with self._lock:
            self._requests.append((method, urlsplit(target).path))


def _half_close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass


class RequestParser:
    """Finds HTTP/1.1 request heads in a byte stream, skipping bodies."""

    def __init__(self, on_request) -> None:
        self.on_request = on_request
        self.buffer = b""
        self.body_left = 0  # bytes of a Content-Length body still to skip
        self.chunked = False  # inside a chunked body
        self.passthrough = False  # after a protocol upgrade: no more HTTP

    def feed(self, data: bytes) -> None:
        if self.passthrough:
            return
        self.buffer += data
        while self._step():
            pass

    def _step(self) -> bool:
        if self.body_left:
            taken = min(self.body_left, len(self.buffer))
            self.buffer = self.buffer[taken:]
            self.body_left -= taken
            return not self.body_left
        if self.chunked:
            return self._chunk()
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return False
        head, self.buffer = self.buffer[:end], self.buffer[end + 4:]
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) >= 2:
            self.on_request(parts[0].decode("latin-1"), parts[1].decode("latin-1"))
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip().lower()
        if headers.get(b"transfer-encoding", b"").endswith(b"chunked"):
            self.chunked = True
        elif headers.get(b"content-length", b"0").isdigit():
            self.body_left = int(headers.get(b"content-length", b"0"))
        if b"upgrade" in headers.get(b"connection", b""):
            self.passthrough = True  # attach/exec hijack: the rest is a raw stream
            return False
        return True

    def _chunk(self) -> bool:
        line_end = self.buffer.find(b"\r\n")
        if line_end < 0:
            return False
        size = int(self.buffer[:line_end].split(b";")[0] or b"0", 16)
        if size == 0:  # the last chunk, then optional trailers and a blank line
            rest = line_end + 2
            if len(self.buffer) < rest + 2:
                return False
            if self.buffer[rest:rest + 2] == b"\r\n":
                cut = rest + 2
            else:
                found = self.buffer.find(b"\r\n\r\n", rest)
                if found < 0:
                    return False
                cut = found + 4
            self.buffer = self.buffer[cut:]
            self.chunked = False
            return True
        needed = line_end + 2 + size + 2
        if len(self.buffer) < needed:
            return False
        self.buffer = self.buffer[needed:]
        return True
