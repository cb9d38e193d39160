"""agent.replay in-process: reading the CSV, and the data's clock standing in for the agent's."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from agent.config.models import AgentConfig
from agent.contract import Message
from agent.core.engine import load_kernel
from agent.replay import Backfill, Options, Reader, ReplayInputError, Topic, parse_ts
from agent.replay.rows import BadRow
from drivers.profile import ProfileLibrary
from drivers.quantities import Quantity

LIBRARY = ProfileLibrary()
T0 = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp() * 1000)
MIN = 60_000
H = 3_600_000
HEADER = "ts,device,quantity,value\n"

load_kernel()  # numba's default cache, before any config names a state_dir


def config(tmp: Path, devices: tuple[str, ...] = ("m1",), **over: Any) -> AgentConfig:
    return AgentConfig.model_validate(
        {
            "site": {"id": "plant-a", "timezone": "Asia/Shanghai"},
            "gateway": {"id": "gw-01"},
            "carbon": {"electricity": {"kg_per_kwh": 0.5}},
            "buses": [{"id": "bus-1", "tcp": {"host": "127.0.0.1"}}],
            "devices": [
                {
                    "id": d,
                    "bus": "bus-1",
                    "unit": i + 1,
                    "interval_s": 60,
                    "registers": [
                        {
                            "quantity": "energy_import_kwh",
                            "table": "input",
                            "address": 0,
                            "type": "float64",
                        }
                    ],
                }
                for i, d in enumerate(devices)
            ],
            "publish": {"energy_interval_s": 300},
            "state_dir": str(tmp / "state"),
            **over,
        }
    )


def write(tmp: Path, text: str, name: str = "r.csv") -> Path:
    p = tmp / name
    p.write_text(text, encoding="utf-8")
    return p


# --- timestamps --------------------------------------------------------------------------

SH = ZoneInfo("Asia/Shanghai")
BERLIN = ZoneInfo("Europe/Berlin")


@pytest.mark.parametrize(
    ("text", "tz", "ms"),
    [
        ("1704067200000", SH, T0),
        ("2024-01-01T00:00:00Z", SH, T0),
        ("2024-01-01T00:00:00+00:00", SH, T0),
        ("2024-01-01T08:00:00+08:00", SH, T0),
        ("2024-01-01 08:00:00+08:00", SH, T0),
        # naive: site local time (Shanghai +8)
        ("2024-01-01T08:00:00", SH, T0),
        ("2024-01-01T08:00:00.250", SH, T0 + 250),
        # naive in Berlin: +1 in winter, +2 in summer
        ("2024-01-01T01:00:00", BERLIN, T0),
        ("2024-07-01T02:00:00", BERLIN, int(datetime(2024, 7, 1, tzinfo=UTC).timestamp() * 1000)),
    ],
)
def test_parse_ts(text: str, tz: ZoneInfo, ms: int) -> None:
    assert parse_ts(text, tz) == ms


@pytest.mark.parametrize("text", ["", "yesterday", "2024-13-01T00:00:00", "1.5e12", "12:00"])
def test_parse_ts_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_ts(text, SH)


# --- reading the file --------------------------------------------------------------------

Row = tuple[int, str, Quantity, float | None]


def read_rows(
    path: Path, cfg: AgentConfig, reader: Reader = Reader.ARROW
) -> tuple[list[Row], list[BadRow]]:
    """What reaches the core, in order: (ts, device, quantity, value); and the bad rows."""
    backfill = Backfill(cfg, LIBRARY, [path], Options(reader=reader))
    rows: list[Row] = []
    for b in backfill.batches():
        for ts, key, value in zip(b.ts.tolist(), b.key.tolist(), b.value.tolist(), strict=True):
            v = None if value != value else value
            rows.append((ts, backfill.vocab.device(key), backfill.vocab.quantity(key), v))
    return rows, sorted(backfill.bad)


def replay(
    cfg: AgentConfig, path: Path, topics: frozenset[Topic], reader: Reader = Reader.ARROW
) -> list[Message]:
    return [
        m
        for batch in Backfill(cfg, LIBRARY, [path], Options(topics, reader=reader)).run()
        for m in batch
    ]


@pytest.mark.parametrize("reader", [Reader.ARROW, Reader.PYTHON])
def test_columns_in_any_order_and_case(tmp_path: Path, reader: Reader) -> None:
    p = write(
        tmp_path,
        "Value,Device,TS,Quantity\n100.0,m1,1704067200000,energy_import_kwh\n",
    )
    rows, bad = read_rows(p, config(tmp_path), reader)
    assert bad == []
    assert rows == [(T0, "m1", Quantity.ENERGY_IMPORT_KWH, 100.0)]


def test_byte_order_mark_is_not_part_of_the_header(tmp_path: Path) -> None:
    # Excel's "CSV UTF-8" starts the file with a BOM.
    p = tmp_path / "excel.csv"
    p.write_bytes(b"\xef\xbb\xbf" + (HEADER + f"{T0},m1,energy_import_kwh,1.0\n").encode())
    rows, bad = read_rows(p, config(tmp_path))
    assert (len(rows), bad) == (1, [])


def test_rows_are_sorted_by_time_keeping_file_order_within_an_instant(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        HEADER
        + f"{T0 + 20_000},m1,energy_import_kwh,3\n"
        + f"{T0},m1,energy_import_kwh,1\n"
        + f"{T0 + 10_000},m2,energy_import_kwh,2\n"
        + f"{T0 + 10_000},m1,energy_import_kwh,2\n",
    )
    rows, _ = read_rows(p, config(tmp_path, ("m1", "m2")))
    assert [(r[1], r[3]) for r in rows] == [("m1", 1), ("m2", 2), ("m1", 2), ("m1", 3)]


def test_not_available_values(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        HEADER
        + f"{T0},m1,energy_import_kwh,\n"
        + f"{T0 + 1},m1,energy_import_kwh,nan\n"
        + f"{T0 + 2},m1,energy_import_kwh,NULL\n",
    )
    rows, bad = read_rows(p, config(tmp_path))
    assert bad == []
    assert [r[3] for r in rows] == [None, None, None]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "r.csv is empty; expected a header ts,device,quantity,value"),
        (
            b"ts,device,quantity\n",
            "r.csv: header must name the columns ts,device,quantity,value "
            "(found: ts,device,quantity)",
        ),
        (
            b"ts,device,quantity,value,unit\n",
            "r.csv: header must name the columns ts,device,quantity,value "
            "(found: ts,device,quantity,value,unit)",
        ),
        (
            # GBK, as a Chinese-locale spreadsheet saves it: not a traceback. "压机" is
            # D1 B9 BB FA in GBK; D1 B9 happens to be valid UTF-8 (U+0479), BB is not.
            HEADER.encode() + "1704067200000,\u538b\u673a,energy_import_kwh,1\n".encode("gbk"),
            "r.csv is not UTF-8 text (undecodable byte 0xbb); save it as UTF-8",
        ),
    ],
    ids=["empty", "three-columns", "five-columns", "gbk"],
)
@pytest.mark.parametrize("reader", [Reader.ARROW, Reader.PYTHON])
def test_whole_file_rejected(tmp_path: Path, content: bytes, message: str, reader: Reader) -> None:
    p = tmp_path / "r.csv"
    p.write_bytes(content)
    with pytest.raises(ReplayInputError) as info:
        read_rows(p, config(tmp_path), reader)
    assert str(info.value).replace(f"{tmp_path}/", "") == message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ReplayInputError, match=r"cannot read .*nope\.csv: No such file"):
        read_rows(tmp_path / "nope.csv", config(tmp_path))


# --- replay ------------------------------------------------------------------------------


def _csv(tmp: Path, series: dict[str, list[tuple[int, float]]]) -> Path:
    """The meters' readings in time order, as a logger writes them."""
    rows = sorted((t, dev, v) for dev, s in series.items() for t, v in s)
    return write(
        tmp, HEADER + "".join(f"{t},{dev},energy_import_kwh,{v:.4f}\n" for t, dev, v in rows)
    )


@pytest.mark.parametrize("reader", [Reader.ARROW, Reader.PYTHON])
def test_a_file_sorted_by_device_is_out_of_order_beyond_the_window(
    tmp_path: Path, reader: Reader
) -> None:
    """All of m1, then all of m2 (an export sorted by device): m2's readings up to 00:44
    are more than 15 min older than the newest before them (01:00); each is reported,
    none is used out of order. From 00:45 on they are within the window, and used."""
    cfg = config(tmp_path, ("m1", "m2"))
    lines = [f"{T0 + k * MIN},m1,energy_import_kwh,{k}\n" for k in range(61)]
    lines += [f"{T0 + k * MIN},m2,energy_import_kwh,{k}\n" for k in range(61)]
    rows, bad = read_rows(write(tmp_path, HEADER + "".join(lines)), cfg, reader)
    assert [r[1] for r in rows].count("m2") == 16
    assert [r[0] for r in rows] == sorted(r[0] for r in rows)
    assert len(bad) == 45
    assert str(bad[0]) == (
        "line 63: ts 2024-01-01T00:00:00.000Z is out of order by more than the reorder "
        "window (15 min): this file had reached 2024-01-01T01:00:00.000Z"
    )
    assert bad[-1].line == 63 + 44  # m2's 00:44


def _run(tmp: Path, cfg: AgentConfig, path: Path, topics: frozenset[Topic] = frozenset(Topic)):
    assert read_rows(path, cfg)[1] == []
    return [m.as_json_line() for m in replay(cfg, path, topics)]


def test_topic_filter_only_filters(tmp_path: Path) -> None:
    cfg = config(tmp_path, ("m1", "m2"))
    path = _csv(
        tmp_path,
        {
            "m1": [(T0 + k * 20_000, 10 + 0.2 * k) for k in range(60)],
            "m2": [(T0 + 7_000 + k * 20_000, 5 + 0.1 * k) for k in range(60)],
        },
    )
    everything = _run(tmp_path, cfg, path)
    for topics in ({Topic.ENERGY}, {Topic.INTENSITY}, {Topic.MEASUREMENTS, Topic.ENERGY}):
        names = {t.value for t in topics}
        want = [m for m in everything if m["topic"].rsplit("/", 1)[-1] in names]
        assert _run(tmp_path, cfg, path, frozenset(topics)) == want


def test_a_meter_that_falls_silent_does_not_stall_the_site(tmp_path: Path) -> None:
    """m2 stops after one hour; m1 goes on for 30 h at 6 kWh/h (0.1 kWh per minute).

    The running agent publishes each interval's intensity core.site_hold_s (120 s)
    after its end without the silent meter; replay does the same on the data's clock.
    So every intensity record from 01:05 on comes right after its own energy record,
    and its 1h window is m1's 6 kWh (plus m2's share while it still counted); were
    the records held back to the end of the file, the core's one-day ring would no
    longer hold the windows of the first hours and they would read 0.
    """
    cfg = config(tmp_path, ("m1", "m2"), publish={"energy_interval_s": 3600})
    path = _csv(
        tmp_path,
        {
            "m1": [(T0 + k * MIN, 0.1 * k) for k in range(30 * 60 + 1)],
            "m2": [(T0 + k * MIN, 0.1 * k) for k in range(61)],
        },
    )
    out = _run(tmp_path, cfg, path, frozenset({Topic.ENERGY, Topic.INTENSITY}))
    intensity = [m["payload"] for m in out if m["topic"].endswith("/intensity")]
    assert [p["ts"] for p in intensity] == [T0 + h * H for h in range(1, 31)]
    # 01:00: both meters, 6 + 6 kWh; afterwards m1 alone
    assert intensity[0]["windows"]["1h"]["energy_kwh"] == 12.0
    assert [p["windows"]["1h"]["energy_kwh"] for p in intensity[1:]] == [6.0] * 29
    # 24h at 30:00 (06:00 UTC day 2) covers 06:00 .. 30:00: m1 alone, 24 x 6 = 144
    assert intensity[-1]["windows"]["24h"]["energy_kwh"] == 144.0
    # each intensity record follows its energy record directly (nothing held to the end)
    kinds = [m["topic"].rsplit("/", 1)[-1] for m in out]
    assert kinds[:3] == ["energy", "energy", "intensity"]
    assert kinds[3:] == ["energy", "intensity"] * 29


def test_a_short_lag_is_waited_for(tmp_path: Path) -> None:
    # m2 is polled once a minute, 50 s past the minute: each interval's intensity waits
    # for m2's reading 50 s after the end (within site_hold_s) and counts both meters.
    cfg = config(tmp_path, ("m1", "m2"))
    path = _csv(
        tmp_path,
        {
            "m1": [(T0 + k * 10_000, 0.05 * k) for k in range(121)],  # 18 kW to 00:20
            "m2": [(T0 + 50_000 + k * MIN, 0.6 * k) for k in range(20)],  # 36 kW
        },
    )
    out = _run(tmp_path, cfg, path, frozenset({Topic.INTENSITY}))
    at_10 = next(m["payload"] for m in out if m["payload"]["ts"] == T0 + 10 * MIN)
    # 15m at 00:10 holds all data so far: m1 600 s x 18 kW = 3.0 kWh; m2 from its first
    # reading at 00:00:50, 550 s x 36 kW = 5.5 kWh. (Without waiting for m2's 00:10:50
    # reading it would hold m2 only to 00:09:50: 4.9 kWh.)
    assert at_10["windows"]["15m"]["energy_kwh"] == 8.5
