"""What stand-in HTTP/1.1 servers share: reading one request off a kept-alive connection, for the tests and benchmarks
that answer robin's own clients without robin."""
from __future__ import annotations

from typing import BinaryIO


def read_request(reader: BinaryIO) -> bytes:
    """The next request's line, its headers and body read past (Content-Length framing only: robin's clients send no
    chunked bodies); b"" once the client has closed the connection."""
    request_line = reader.readline()
    if request_line:
        length = 0
        while (line := reader.readline()) not in (b"\r\n", b""):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        reader.read(length)
    return request_line
