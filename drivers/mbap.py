"""Modbus TCP framing for the pipelined client: MBAP requests out, answers split and judged.

Pure functions over bytes, no sockets, so that the framing can be tested without
a server and the server in the tests cannot share a bug with it. A Modbus TCP
frame is the MBAP header (transaction id, protocol id 0, length of what
follows, unit id) and a PDU (function code, data); see the Modbus Messaging on
TCP/IP Implementation Guide V1.0b, section 3.1.3.

Two kinds of trouble are kept apart because they call for different cures:

* the **stream** is broken (protocol id not 0, a length no frame can have):
  where the next frame starts is unknown, so the connection must be reset and
  every request in flight on it fails (:class:`StreamError`);
* **one answer** is wrong but correctly framed (wrong unit, wrong function code,
  wrong byte count): only the request it answers fails; the judgement is
  :func:`drivers.frames.check_tcp`'s, the same texts the pymodbus path gives.
"""

from __future__ import annotations

import struct

from drivers.frames import Request, check_tcp

#: tid, protocol id, length, unit id, function code, address, count.
_READ = struct.Struct(">HHHBBHH")
_HEAD = struct.Struct(">HHH")
#: The largest MBAP length field: unit id + a 253-byte PDU (Modbus spec, section 4.1).
MAX_LENGTH = 254


class StreamError(Exception):
    """The byte stream is no longer Modbus TCP: the connection has to be reset."""


def encode_read(tid: int, unit: int, fc: int, address: int, count: int) -> bytes:
    """A read request (function codes 1-4) as it goes on the wire."""
    return _READ.pack(tid, 0, 6, unit, fc, address, count)


def split(buffer: bytearray) -> list[tuple[int, bytes]]:
    """Take every complete frame off the front of ``buffer``: ``(tid, frame)`` in order.

    What remains in ``buffer`` is the start of the next frame. Raises
    :class:`StreamError` when the header says the stream is not Modbus TCP.
    """
    out = []
    pos = 0
    n = len(buffer)
    while n - pos >= 6:
        tid, pid, length = _HEAD.unpack_from(buffer, pos)
        if pid != 0:
            raise StreamError(f"not a Modbus TCP answer (protocol id {pid}, not 0)")
        if not 2 <= length <= MAX_LENGTH:
            raise StreamError(f"MBAP length {length} is outside 2..{MAX_LENGTH}")
        end = pos + 6 + length
        if end > n:
            break
        out.append((tid, bytes(buffer[pos:end])))
        pos = end
    if pos:
        del buffer[:pos]
    return out


def judge(req: Request, frame: bytes) -> bytes | int | str:
    """The answer's data (after function code and byte count), its exception code (an
    int), or why it is refused (a str)."""
    if len(frame) < 9:
        return f"MBAP length {len(frame) - 6} is too short for an answer"
    verdict = check_tcp(req, frame)
    if isinstance(verdict, str):
        return verdict
    if verdict is None or verdict[1] != len(frame):
        return f"MBAP length {len(frame) - 6} does not fit the answer (truncated frame)"
    if frame[7] & 0x80:
        return frame[8]
    return frame[9:]


def registers(data: bytes) -> list[int]:
    """Big-endian 16-bit words."""
    return list(struct.unpack(f">{len(data) // 2}H", data))


def bits(data: bytes, count: int) -> list[int]:
    """Coils or discrete inputs, least significant bit of the first byte first."""
    return [(data[i >> 3] >> (i & 7)) & 1 for i in range(count)]
