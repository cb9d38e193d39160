"""HTTP/1.1 on asyncio streams, as little as the gateway's server needs: one request
head read within limits, one answer written within a deadline, a connection closed
even when the peer has stopped reading.

Kept apart from :mod:`agent.http.server` (routes, viewers, the tick) so that the
bytes on the wire and their limits are read in one short place.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

MAX_HEAD = 8192
MAX_HEADERS = 64
WRITE_TIMEOUT_S = 10.0
#: How long a refusal (4xx, 503) may take to write; the client has not earned more.
REFUSAL_WRITE_TIMEOUT_S = 1.0
#: How long a closed connection may take to flush before it is aborted.
CLOSE_TIMEOUT_S = 1.0

REASONS = {
    200: "OK",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}

#: Security headers for every answer: the page loads nothing from anywhere else.
COMMON_HEADERS = (
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
)

Headers = tuple[tuple[str, str], ...]


class HttpError(Exception):
    """A request refused: its status, the words of the answer, headers it must carry."""

    def __init__(self, status: int, message: str = "", headers: Headers = ()) -> None:
        super().__init__(message or REASONS.get(status, ""))
        self.status = status
        self.headers = headers


async def read_head(
    reader: asyncio.StreamReader, timeout_s: float
) -> tuple[str, str, str, dict[str, str]]:
    """Method, target, version and headers (lower-case names) of one request.

    HttpError for a head that is late (408), too large (431) or malformed (400,
    505); IncompleteReadError when the peer closes before the head is complete.
    """
    try:
        async with asyncio.timeout(timeout_s):
            head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise HttpError(431) from None
    except TimeoutError:
        raise HttpError(408) from None
    if len(head) > MAX_HEAD:
        raise HttpError(431)
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise HttpError(400, "malformed request line")
    method, target, version = parts
    if not version.startswith("HTTP/1."):
        raise HttpError(505)
    headers: dict[str, str] = {}
    fields = [x for x in lines[1:] if x]
    if len(fields) > MAX_HEADERS:
        raise HttpError(431)
    for line in fields:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise HttpError(400, "malformed header")
        headers[name.lower()] = value.strip()
    return method, target, version, headers


async def respond(
    writer: asyncio.StreamWriter,
    status: int,
    body: bytes,
    content_type: str,
    *,
    extra: Headers = (),
    head_only: bool = False,
    write_s: float = WRITE_TIMEOUT_S,
) -> None:
    """One complete answer, then the connection is done (``Connection: close``)."""
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}"]
    lines += [f"{k}: {v}" for k, v in (*COMMON_HEADERS, *extra)]
    lines += [
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    if not head_only:
        writer.write(body)
    async with asyncio.timeout(write_s):  # no task per call, unlike wait_for
        await writer.drain()


async def refuse(
    writer: asyncio.StreamWriter,
    status: int,
    body: bytes,
    *,
    extra: Headers = (),
    head_only: bool = False,
) -> None:
    """A plain-text refusal, given at most ``REFUSAL_WRITE_TIMEOUT_S`` to leave."""
    await respond(
        writer,
        status,
        body,
        "text/plain; charset=utf-8",
        extra=extra,
        head_only=head_only,
        write_s=REFUSAL_WRITE_TIMEOUT_S,
    )


async def refuse_with(
    writer: asyncio.StreamWriter, error: HttpError, *, head_only: bool = False
) -> None:
    """The refusal ``error`` stands for."""
    body = f"{error}\n".encode()
    await refuse(writer, error.status, body, extra=error.headers, head_only=head_only)


async def refuse_quietly(writer: asyncio.StreamWriter, status: int, body: bytes) -> None:
    """A refusal on a connection that may already be broken: a failure is not news."""
    with contextlib.suppress(Exception):
        await refuse(writer, status, body)


async def close(writer: asyncio.StreamWriter) -> None:
    """Close; abort if the peer does not take the rest within ``CLOSE_TIMEOUT_S``.

    A plain close waits for the send buffer to drain, for ever if the peer
    stopped reading: the socket would outlive its slot.
    """
    writer.close()
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await writer.wait_closed()
    except (OSError, TimeoutError, asyncio.CancelledError):
        writer.transport.abort()


def event_frame(doc: dict[str, Any]) -> bytes:
    """A server-sent ``state`` event: one data line (JSON has no raw newlines)."""
    data = json.dumps(doc, separators=(",", ":"), allow_nan=False)
    return f"event: state\ndata: {data}\n\n".encode()
