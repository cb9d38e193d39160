"""Modbus TCP framing for several requests in flight, byte by byte: requests out,
answers split off the stream, judged, and handed to their request by transaction id.

Frames are written out by hand (MBAP header, PDU), so a test states the bytes a
gateway sent and what the agent makes of them.
"""

from __future__ import annotations

import asyncio
import struct

import pytest

from drivers.endpoint import Endpoint, Framing, Timing
from drivers.errors import ConnectionLost, MalformedResponse, TransportConfigError
from drivers.frames import Request
from drivers.mbap import StreamError, bits, encode_read, judge, registers, split
from drivers.pipeline import PipelinedTransport, _Link, _Outcome, _Waiter
from drivers.transport import ModbusTransport, open_bus


def mbap(tid: int, unit: int, pdu: bytes, *, pid: int = 0, length: int | None = None) -> bytes:
    size = len(pdu) + 1 if length is None else length
    return struct.pack(">HHHB", tid, pid, size, unit) + pdu


REGS = bytes.fromhex("43660000")  # two registers: float32 230.0
ANSWER = bytes([4, 4]) + REGS  # FC04, byte count 4


def test_a_read_request_is_the_mbap_header_and_the_pdu() -> None:
    # tid 0x1234, protocol 0, length 6 (unit + 5 PDU bytes), unit 5, FC04, address 16, count 2
    assert encode_read(0x1234, 5, 4, 0x0010, 2) == bytes.fromhex("1234 0000 0006 05 04 0010 0002")


def test_split_takes_whole_frames_and_keeps_the_start_of_the_next() -> None:
    a, b, c = mbap(1, 1, ANSWER), mbap(2, 2, ANSWER), mbap(3, 3, ANSWER)
    buf = bytearray(a + b + c[:5])
    assert split(buf) == [(1, a), (2, b)]
    assert buf == c[:5]
    buf += c[5:]
    assert split(buf) == [(3, c)]
    assert buf == b""


def test_split_byte_by_byte_gives_the_same_frames() -> None:
    stream = mbap(7, 1, ANSWER) + mbap(9, 2, bytes([0x84, 0x02]))
    buf, got = bytearray(), []
    for byte in stream:
        buf.append(byte)
        got += split(buf)
    assert got == [(7, stream[:13]), (9, stream[13:])]


@pytest.mark.parametrize(
    ("frame", "why"),
    [
        (mbap(1, 1, ANSWER, pid=1), "protocol id 1, not 0"),
        (mbap(1, 1, ANSWER, length=1), "MBAP length 1 is outside 2..254"),
        (mbap(1, 1, ANSWER, length=255), "MBAP length 255 is outside 2..254"),
        (b"HTTP/1.1 400 Bad Request\r\n", "protocol id"),
    ],
)
def test_a_header_no_frame_can_have_breaks_the_stream(frame: bytes, why: str) -> None:
    with pytest.raises(StreamError, match=why):
        split(bytearray(frame))


def test_judge_accepts_the_answer_asked_for_and_says_what_is_wrong_otherwise() -> None:
    req = Request(unit=1, fc=4, count=2, tid=5)
    assert judge(req, mbap(5, 1, ANSWER)) == REGS
    assert judge(req, mbap(5, 1, bytes([0x84, 0x02]))) == 2  # illegal data address
    assert judge(req, mbap(5, 2, ANSWER)) == "answer from unit 2 to a request for unit 1"
    assert judge(req, mbap(5, 1, bytes([3, 4]) + REGS)) == (
        "answer with function code 3 to a function code 4 request"
    )
    assert judge(req, mbap(5, 1, bytes([4, 2]) + REGS[:2])) == (
        "byte count 2 for 2 registers (expected 4)"
    )
    assert judge(req, mbap(5, 1, bytes([4, 4]) + REGS + b"\x00\x00")) == (
        "MBAP length 9 does not fit byte count 4 (truncated frame)"  # 1 + 1 + 1 + 6
    )
    assert judge(req, mbap(5, 1, b"\x04")) == "MBAP length 2 is too short for an answer"


def test_words_and_bits_as_modbus_sends_them() -> None:
    assert registers(REGS) == [0x4366, 0x0000]
    # 0b00000101, 0b00000001: coils 0, 2 and 8 on (first coil is the first byte's LSB)
    assert bits(bytes([0x05, 0x01]), 10) == [1, 0, 1, 0, 0, 0, 0, 0, 1, 0]


# --- transaction ids: answers to their own request, in any order ---------------------------


def _link_with(requests: dict[int, Request]) -> tuple[_Link, dict[int, asyncio.Future[_Outcome]]]:
    link = _Link(stale=4)
    loop = asyncio.get_running_loop()
    futures: dict[int, asyncio.Future[_Outcome]] = {}
    for tid, req in requests.items():
        futures[tid] = loop.create_future()
        link.pending[tid] = _Waiter(req, futures[tid])
    return link, futures


def _answer(unit: int, value: int) -> bytes:
    return bytes([4, 2]) + value.to_bytes(2, "big")


async def test_answers_in_any_order_reach_their_own_request() -> None:
    link, futures = _link_with({t: Request(unit=t, fc=4, count=1, tid=t) for t in (1, 2, 3)})
    # unit 3 answers first, then 1, then 2, the last two in one segment split mid-frame
    stream = mbap(3, 3, _answer(3, 300)) + mbap(1, 1, _answer(1, 100)) + mbap(2, 2, _answer(2, 200))
    link.data_received(stream[:20])
    assert futures[3].done() and not futures[1].done()
    link.data_received(stream[20:])
    assert {t: registers(f.result()) for t, f in futures.items()} == {  # type: ignore[arg-type]
        1: [100],
        2: [200],
        3: [300],
    }
    assert link.pending == {} and not link.closed


async def test_one_wrong_answer_fails_only_its_request() -> None:
    link, futures = _link_with({t: Request(unit=t, fc=4, count=1, tid=t) for t in (1, 2)})
    link.data_received(mbap(1, 9, _answer(9, 900)) + mbap(2, 2, _answer(2, 200)))
    assert futures[1].result() == "answer from unit 9 to a request for unit 1"
    assert futures[2].result() == bytes([0, 200])
    assert not link.closed


async def test_an_answer_nobody_asked_for_fails_everything_in_flight() -> None:
    link, futures = _link_with({t: Request(unit=t, fc=4, count=1, tid=t) for t in (1, 2)})
    link.data_received(mbap(77, 1, _answer(1, 100)))
    for f in futures.values():
        err = f.result()
        assert isinstance(err, MalformedResponse)
        assert err.detail == (
            "answer to transaction 77, which is not in flight; connection reset (if the "
            "gateway takes one request at a time, set the bus's max_inflight to 1)"
        )
    assert link.closed and link.pending == {}


async def test_the_late_answer_of_a_timed_out_request_is_skipped() -> None:
    link, futures = _link_with({2: Request(unit=2, fc=4, count=1, tid=2)})
    link.stale.append(1)  # request 1 timed out
    link.data_received(mbap(1, 1, _answer(1, 100)) + mbap(2, 2, _answer(2, 200)))
    assert futures[2].result() == bytes([0, 200])
    assert not link.closed


async def test_garbage_and_a_cut_connection_fail_what_is_in_flight() -> None:
    link, futures = _link_with({1: Request(unit=1, fc=4, count=1, tid=1)})
    link.data_received(b"\x00\x01\xde\xad")  # not enough for a header yet: wait
    assert not futures[1].done()
    link.data_received(b"\x00\x05garbage")
    err = futures[1].result()
    assert isinstance(err, MalformedResponse)
    assert err.detail == "not a Modbus TCP answer (protocol id 57005, not 0); connection reset"

    link, futures = _link_with({1: Request(unit=1, fc=4, count=1, tid=1)})
    link.data_received(mbap(1, 1, _answer(1, 100))[:8])
    link.connection_lost(None)
    err = futures[1].result()
    assert isinstance(err, ConnectionLost)
    assert err.detail == "connection closed by the other end (8 bytes of a frame unread)"


# --- which client a bus gets -----------------------------------------------------------------


def test_the_pipelined_client_only_where_several_requests_may_be_in_flight() -> None:
    tcp = Endpoint(Framing.TCP, host="127.0.0.1", port=502)
    assert type(open_bus(tcp, Timing())) is ModbusTransport  # the default: pymodbus, as before
    assert type(open_bus(tcp, Timing(max_inflight=1))) is ModbusTransport
    assert type(open_bus(tcp, Timing(max_inflight=8))) is PipelinedTransport
    box = Endpoint(Framing.RTU_OVER_TCP, host="127.0.0.1", port=502)
    assert type(open_bus(box, Timing(max_inflight=8))) is ModbusTransport
    with pytest.raises(TransportConfigError, match="need Modbus TCP"):
        PipelinedTransport(box, Timing(max_inflight=8))
