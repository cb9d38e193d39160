"""Every answer checked against the request it answers, before pymodbus decodes it.

pymodbus matches an answer to its request by unit id and transaction id, and by
the transaction id only when the answer's is not 0; it decodes whatever function
code the answer carries (an FC03 answer to an FC04 request came back as the
registers asked for), and a frame it cannot decode raises inside asyncio's
``data_received``: a logged traceback per frame and a dropped connection. So the
transport hands pymodbus only bytes a :class:`FrameGuard` has checked, through
pymodbus' documented ``trace_packet`` hook (it sees every packet sent and the
receive buffer before the framer does, and returns what the framer gets):

* the request just sent is parsed from its own bytes, so the guard needs nothing
  from pymodbus' internals;
* an answer must come from the unit asked, with the function code asked (or its
  exception), the byte count the register count implies and, for Modbus TCP, the
  transaction id of the request and protocol id 0, for RTU a valid CRC;
* anything else is rejected with a reason that is the same every time the device
  does the same wrong thing (so the agent's log says it once, not per poll), and
  pymodbus gets an exception answer with code 0 in its place, which ends the
  request at once instead of after its timeout. The transport raises the reason
  as :class:`~drivers.errors.MalformedResponse`.

Late answers to requests that timed out are skipped, not rejected: a slow meter
on a shared RS-485 line, or behind a busy TCP gateway, must not make its
neighbours' next answers fail. Only answers to one of the last few unanswered
requests count as late; an answer to a question nobody asked is rejected.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass

#: Modbus TCP header (MBAP) plus function code: tid, protocol id, length, unit, fc.
_MBAP = struct.Struct(">HHHBB")
#: The largest MBAP length field: unit id + a 253-byte PDU (Modbus spec, section 4.1).
_MAX_MBAP_LENGTH = 254
#: Bytes that RS-485 adapters emit when the line turns around (a 0x00 or 0xFF before
#: the answer). Neither is a unit id an answer can come from (0 is broadcast, 255
#: reserved), so skipping them cannot hide a wrong unit.
_TURNAROUND = (0x00, 0xFF)
#: Line noise, a damaged frame or another protocol: the text does not depend on the bytes,
#: so a noisy line is one cause in the log, not a new message per poll.
NOT_RTU = "not a Modbus RTU answer (CRC does not match: noise or a damaged frame)"
#: How many unanswered requests a late answer may belong to.
_STALE = 4


@dataclass(frozen=True, slots=True)
class Request:
    """A read request as sent on the wire."""

    unit: int
    fc: int
    count: int
    tid: int = 0  # Modbus TCP only

    @property
    def byte_count(self) -> int:
        """The byte count a correct answer carries."""
        return 2 * self.count if self.fc in (3, 4) else (self.count + 7) // 8


def parse_request(packet: bytes, rtu: bool) -> Request | None:
    """The read request (function codes 1-4) in a packet we sent; None for anything else."""
    if rtu:
        if len(packet) != 8:
            return None
        unit, fc, _address, count = struct.unpack_from(">BBHH", packet)
        tid = 0
    else:
        if len(packet) != 12:
            return None
        tid, _pid, _length, unit, fc = _MBAP.unpack_from(packet)
        count = int.from_bytes(packet[10:12], "big")
    if fc not in (1, 2, 3, 4):
        return None
    return Request(unit, fc, count, tid)


# --- the checks: (start, end) of the accepted frame, a rejection, or None (wait) -------------

Verdict = tuple[int, int] | str | None


def check_tcp(req: Request, data: bytes, stale: tuple[Request, ...] = ()) -> Verdict:
    """Find the answer to ``req`` in a Modbus TCP receive buffer."""
    pos = 0
    while len(data) - pos >= 9:  # the shortest answer: MBAP, function code, exception code
        tid, pid, length, unit, fc = _MBAP.unpack_from(data, pos)
        if pid != 0:
            return "not a Modbus TCP answer (protocol id is not 0)"
        if not 2 <= length <= _MAX_MBAP_LENGTH:
            return f"MBAP length {length} is outside 2..{_MAX_MBAP_LENGTH}"
        if tid != req.tid:
            if not any(s.tid == tid for s in stale):
                return "answer to another transaction (its transaction id is not the request's)"
            if len(data) < pos + 6 + length:
                return None
            pos += 6 + length  # a late answer to a request that timed out: skip it
            continue
        if unit != req.unit:
            return f"answer from unit {unit} to a request for unit {req.unit}"
        if fc == req.fc | 0x80:
            if length != 3:
                return f"exception answer with MBAP length {length} (expected 3)"
            return pos, pos + 9
        if fc != req.fc:
            return f"answer with function code {fc} to a function code {req.fc} request"
        byte_count = data[pos + 8]
        if byte_count != req.byte_count:
            return _count_problem(req, byte_count)
        if length != 3 + byte_count:
            return f"MBAP length {length} does not fit byte count {byte_count} (truncated frame)"
        end = pos + 9 + byte_count
        return (pos, end) if len(data) >= end else None
    return None


def check_rtu(req: Request, data: bytes, stale: tuple[Request, ...] = ()) -> Verdict:
    """Find the answer to ``req`` in an RTU receive buffer (serial or over TCP)."""
    pos = 0
    while pos < len(data) and data[pos] in _TURNAROUND:
        pos += 1
    while len(data) - pos >= 5:  # the shortest answer: unit, fc, exception code, CRC
        unit, fc = data[pos], data[pos + 1]
        # The request itself first, then late answers to the ones that timed out.
        asked = [r for r in (req, *stale) if r.unit == unit and r.fc == fc & 0x7F]
        if not asked:
            if unit == req.unit:
                return f"answer with function code {fc} to a function code {req.fc} request"
            # Another unit id, or noise: only a whole frame with a valid CRC says which.
            size = 5 if fc & 0x80 else 5 + data[pos + 2] if fc in (1, 2, 3, 4) else None
            if size is not None and len(data) < pos + size:
                return None
            if size is None or not _crc_ok(data, pos, size):
                return NOT_RTU
            return f"answer from unit {unit} to a request for unit {req.unit}"
        if fc & 0x80:
            answered, size = asked[0], 5
        else:
            found = [r for r in asked if r.byte_count == data[pos + 2]]
            if not found:
                return _count_problem(asked[0], data[pos + 2])
            answered, size = found[0], 5 + data[pos + 2]
        if len(data) < pos + size:
            return None
        if not _crc_ok(data, pos, size):
            return NOT_RTU
        if answered is req:
            return pos, pos + size
        pos += size  # a late answer to a request that timed out: skip it
    return None


def _crc_ok(data: bytes, pos: int, size: int) -> bool:
    return crc16(data[pos : pos + size - 2]) == data[pos + size - 2 : pos + size]


def _count_problem(req: Request, byte_count: int) -> str:
    what = "registers" if req.fc in (3, 4) else "bits"
    return f"byte count {byte_count} for {req.count} {what} (expected {req.byte_count})"


# --- the guard -----------------------------------------------------------------------------


class FrameGuard:
    """Sits in pymodbus' ``trace_packet`` hook of one client: see the module docstring.

    pymodbus sends one request at a time per client and clears its receive buffer
    before each, so the guard tracks exactly one outstanding request.
    """

    def __init__(self, rtu: bool) -> None:
        self.rtu = rtu
        self._check = check_rtu if rtu else check_tcp
        self._pending: Request | None = None
        self._stale: deque[Request] = deque(maxlen=_STALE)
        #: Why the last answer was refused; taken (and cleared) by the transport.
        self.rejection: str | None = None

    def trace(self, sending: bool, data: bytes) -> bytes:
        """pymodbus' ``trace_packet``: returns the bytes pymodbus may use."""
        if sending:
            self.sent(data)
            return data
        return self.received(data)

    def sent(self, packet: bytes) -> None:
        if self._pending is not None:  # never answered: its answer may still come
            self._stale.append(self._pending)
        self._pending = parse_request(packet, self.rtu)
        self.rejection = None

    def received(self, data: bytes) -> bytes:
        req = self._pending
        if req is None:
            return b""  # nothing outstanding: late or unsolicited bytes go nowhere
        verdict = self._check(req, data, tuple(self._stale))
        if verdict is None:
            return b""  # wait for the rest of the frame
        self._pending = None
        if isinstance(verdict, str):
            self.rejection = verdict
            return self._refusal(req)
        start, end = verdict
        return data[start:end]

    def connected(self, up: bool) -> None:
        """pymodbus' ``trace_connect``: answers sent on a closed connection never arrive."""
        self._pending = None
        self._stale.clear()

    def take_rejection(self) -> str | None:
        out, self.rejection = self.rejection, None
        return out

    def _refusal(self, req: Request) -> bytes:
        """An exception answer (code 0, which no device sends) that ends the request now."""
        if self.rtu:
            frame = bytes((req.unit, req.fc | 0x80, 0))
            return frame + crc16(frame)
        return _MBAP.pack(req.tid, 0, 3, req.unit, req.fc | 0x80) + b"\x00"


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc16(data: bytes) -> bytes:
    """Modbus RTU CRC-16 (polynomial 0xA001, start 0xFFFF), low byte first as on the wire."""
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ byte) & 0xFF]
    return crc.to_bytes(2, "little")
