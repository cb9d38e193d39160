"""The frame guard, byte by byte: what an answer must be to reach pymodbus.

Frames are written out by hand here (MBAP header, PDU, RTU CRC), so a test
states the bytes a meter sent and what the agent makes of them.
"""

from __future__ import annotations

import struct

import pytest

from drivers.frames import NOT_RTU, FrameGuard, Request, crc16, parse_request


def mbap(tid: int, unit: int, pdu: bytes, *, pid: int = 0, length: int | None = None) -> bytes:
    size = len(pdu) + 1 if length is None else length
    return struct.pack(">HHHB", tid, pid, size, unit) + pdu


def tcp_read(tid: int, unit: int, fc: int, address: int, count: int) -> bytes:
    return mbap(tid, unit, struct.pack(">BHH", fc, address, count))


def rtu(unit: int, pdu: bytes) -> bytes:
    adu = bytes([unit]) + pdu
    return adu + crc16(adu)


def rtu_read(unit: int, fc: int, address: int, count: int) -> bytes:
    return rtu(unit, struct.pack(">BHH", fc, address, count))


REGS = bytes.fromhex("43660000")  # two registers: float32 230.0
ANSWER_PDU = bytes([4, 4]) + REGS  # FC04, byte count 4


def test_crc_of_the_modbus_specification_example() -> None:
    # "01 03 00 00 00 0A" is sent as "01 03 00 00 00 0A C5 CD" (Modbus over serial line, 6.2.2)
    assert crc16(bytes.fromhex("01030000000A")) == bytes.fromhex("C5CD")


def test_requests_are_read_back_from_the_bytes_sent() -> None:
    assert parse_request(tcp_read(7, 3, 4, 0x48, 2), rtu=False) == Request(3, 4, 2, 7)
    assert parse_request(rtu_read(3, 1, 0, 10), rtu=True) == Request(3, 1, 10, 0)
    assert Request(3, 1, 10).byte_count == 2  # ten coils: ceil(10 / 8) bytes
    assert Request(3, 3, 60).byte_count == 120
    assert parse_request(mbap(1, 1, bytes([6, 0, 1, 0, 2])), rtu=False) is None  # a write


# --- Modbus TCP ----------------------------------------------------------------------------


def tcp_guard(tid: int = 7, unit: int = 3) -> FrameGuard:
    guard = FrameGuard(rtu=False)
    guard.sent(tcp_read(tid, unit, 4, 0, 2))
    return guard


def test_tcp_answer_to_the_request_reaches_pymodbus_unchanged() -> None:
    guard = tcp_guard()
    answer = mbap(7, 3, ANSWER_PDU)
    assert guard.received(answer) == answer
    assert guard.take_rejection() is None


def test_tcp_answer_in_pieces_waits_for_the_whole_frame() -> None:
    guard = tcp_guard()
    answer = mbap(7, 3, ANSWER_PDU)
    assert guard.received(answer[:5]) == b""
    assert guard.received(answer[:12]) == b""
    assert guard.received(answer + b"\x99") == answer  # trailing bytes are not passed on
    assert guard.rejection is None


def test_tcp_exception_answer_passes() -> None:
    guard = tcp_guard()
    answer = mbap(7, 3, bytes([0x84, 0x02]))
    assert guard.received(answer) == answer


REFUSAL = mbap(7, 3, bytes([0x84, 0x00]))  # what pymodbus gets instead: exception code 0

BAD_TCP = {
    "FC03 data for FC04": (
        mbap(7, 3, bytes([3, 4]) + REGS),
        "answer with function code 3 to a function code 4 request",
    ),
    "next transaction id": (
        mbap(8, 3, ANSWER_PDU),
        "answer to another transaction (its transaction id is not the request's)",
    ),
    "transaction id 0": (
        mbap(0, 3, ANSWER_PDU),
        "answer to another transaction (its transaction id is not the request's)",
    ),
    "another unit": (mbap(7, 4, ANSWER_PDU), "answer from unit 4 to a request for unit 3"),
    "byte count 255": (
        mbap(7, 3, bytes([4, 255]) + REGS),
        "byte count 255 for 2 registers (expected 4)",
    ),
    "twice the registers": (
        mbap(7, 3, bytes([4, 8]) + REGS + REGS),
        "byte count 8 for 2 registers (expected 4)",
    ),
    "truncated": (
        mbap(7, 3, bytes([4, 4]) + REGS[:2]),
        "MBAP length 5 does not fit byte count 4 (truncated frame)",
    ),
    "protocol id 1": (
        mbap(7, 3, ANSWER_PDU, pid=1),
        "not a Modbus TCP answer (protocol id is not 0)",
    ),
    "length 0": (mbap(7, 3, ANSWER_PDU, length=0), "MBAP length 0 is outside 2..254"),
    "length 300": (mbap(7, 3, ANSWER_PDU, length=300), "MBAP length 300 is outside 2..254"),
    "unknown function code": (
        mbap(7, 3, bytes([0x41, 4]) + REGS),
        "answer with function code 65 to a function code 4 request",
    ),
    "long exception": (
        mbap(7, 3, bytes([0x84, 2, 0])),
        "exception answer with MBAP length 4 (expected 3)",
    ),
}


@pytest.mark.parametrize("name", BAD_TCP)
def test_tcp_answer_that_is_not_the_answer_is_refused(name: str) -> None:
    frame, reason = BAD_TCP[name]
    guard = tcp_guard()
    assert guard.received(frame) == REFUSAL
    assert guard.take_rejection() == reason
    assert guard.take_rejection() is None  # taken once
    assert guard.received(frame) == b""  # the request is over: more bytes go nowhere


def test_tcp_late_answer_to_a_timed_out_request_is_skipped_not_refused() -> None:
    guard = FrameGuard(rtu=False)
    guard.sent(tcp_read(7, 3, 4, 0, 2))  # no answer in time
    guard.sent(tcp_read(8, 5, 4, 0, 2))  # the next request, another unit
    late, answer = mbap(7, 3, ANSWER_PDU), mbap(8, 5, ANSWER_PDU)
    assert guard.received(late) == b""  # not refused: the answer may follow
    assert guard.received(late + answer) == answer
    assert guard.rejection is None


def test_tcp_garbage_is_refused_with_the_same_reason_every_time() -> None:
    reasons = set()
    for seed in range(20):
        guard = tcp_guard()
        garbage = bytes((seed * 37 + i * 101 + 1) % 256 for i in range(16))
        assert guard.received(garbage) == REFUSAL
        reasons.add(guard.take_rejection())
    assert reasons == {"not a Modbus TCP answer (protocol id is not 0)"}


def test_a_reconnect_forgets_the_outstanding_requests() -> None:
    guard = tcp_guard()
    guard.connected(True)
    assert guard.received(mbap(7, 3, ANSWER_PDU)) == b""


# --- RTU (serial line, or over TCP) -------------------------------------------------------


def rtu_guard(unit: int = 3) -> FrameGuard:
    guard = FrameGuard(rtu=True)
    guard.sent(rtu_read(unit, 4, 0, 2))
    return guard


RTU_REFUSAL = rtu(3, bytes([0x84, 0x00]))


def test_rtu_answer_passes_and_line_turnaround_bytes_are_dropped() -> None:
    answer = rtu(3, ANSWER_PDU)
    guard = rtu_guard()
    assert guard.received(answer[:4]) == b""
    assert guard.received(answer) == answer
    guard = rtu_guard()
    assert guard.received(b"\x00" + answer) == answer


BAD_RTU = {
    "FC03 data for FC04": (
        rtu(3, bytes([3, 4]) + REGS),
        "answer with function code 3 to a function code 4 request",
    ),
    "another unit": (rtu(4, ANSWER_PDU), "answer from unit 4 to a request for unit 3"),
    "byte count 255": (
        rtu(3, bytes([4, 255]) + REGS),
        "byte count 255 for 2 registers (expected 4)",
    ),
    "bad CRC": (rtu(3, ANSWER_PDU)[:-1] + b"\x00", NOT_RTU),
    "noise": (bytes.fromhex("5a17e3c2019b44"), NOT_RTU),
    "another unit, bad CRC": (rtu(4, ANSWER_PDU)[:-1] + b"\x00", NOT_RTU),
}


@pytest.mark.parametrize("name", BAD_RTU)
def test_rtu_answer_that_is_not_the_answer_is_refused(name: str) -> None:
    frame, reason = BAD_RTU[name]
    guard = rtu_guard()
    assert guard.received(frame) == RTU_REFUSAL
    assert guard.take_rejection() == reason


def test_rtu_late_answer_of_another_unit_does_not_fail_its_neighbour() -> None:
    guard = FrameGuard(rtu=True)
    guard.sent(rtu_read(1, 4, 0, 2))  # unit 1 is slow: timed out
    guard.sent(rtu_read(3, 4, 0, 2))
    late, answer = rtu(1, ANSWER_PDU), rtu(3, ANSWER_PDU)
    assert guard.received(late) == b""
    assert guard.received(late + answer) == answer
    assert guard.rejection is None
