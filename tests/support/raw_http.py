"""A client on a raw socket, for what HTTP libraries will not do: stall, pipeline, reset.

``RawClient`` speaks just enough HTTP/1.1 to send requests (several in one
write, for pipelining), read some bytes or none at all, and leave with a TCP
reset. Its receive buffer is small, so a client that stops reading stops the
server's writes after a few kilobytes instead of after the kernel's default
megabytes.
"""

from __future__ import annotations

import json
import socket
import struct
import time
from typing import Any
from urllib.parse import urlsplit

SMALL_RECEIVE_BUFFER = 4096


def request_bytes(
    url: str, path: str, body: dict[str, Any], token: str, *, extra: dict[str, str] | None = None
) -> bytes:
    """One POST with a JSON body, as bytes on the wire."""
    payload = json.dumps(body).encode()
    host = urlsplit(url).netloc
    headers = {
        "Host": host,
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/json",
        "Content-Length": str(len(payload)),
        **(extra or {}),
    }
    head = f"POST {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return head.encode() + b"\r\n" + payload


class RawClient:
    def __init__(self, url: str, *, receive_buffer: int = SMALL_RECEIVE_BUFFER) -> None:
        parts = urlsplit(url)
        self.url = url
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # Before connecting: the window the server may fill is set at the handshake.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.connect((parts.hostname or "127.0.0.1", parts.port or 80))
        self.received = b""

    def send(self, *requests: bytes) -> None:
        """Send ``requests`` in one write: more than one is pipelining."""
        self.sock.sendall(b"".join(requests))

    def post(self, body: dict[str, Any], token: str, path: str = "/v1/chat/completions") -> None:
        self.send(request_bytes(self.url, path, body, token))

    def read_until(self, marker: bytes, timeout: float = 10) -> bytes:
        """Read until ``marker`` has arrived (or fail after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while marker not in self.received:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{marker!r} not received in {timeout}s")
            self.sock.settimeout(remaining)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed before {marker!r}")
            self.received += chunk
        return self.received

    def read_to_close(self, timeout: float = 30) -> bytes:
        """Everything until the server closes the connection."""
        self.sock.settimeout(timeout)
        while chunk := self.sock.recv(65536):
            self.received += chunk
        return self.received

    def reset(self) -> None:
        """Leave with a TCP reset (SO_LINGER 0), not a polite close."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def close(self) -> None:
        self.sock.close()
