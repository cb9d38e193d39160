"""Net import in the site's windows, across a restart and an upgrade.

The readings are tests/cases/replay-net-import's (hand arithmetic in its config.yaml):
a grid meter importing 0.5 kWh a minute, a power-only pv meter at +12 kW to 00:05 and
-60 kW from 00:06, one reading a minute to 00:10, 300 s intervals.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from agent.config import load_config
from agent.contract import Message
from agent.core import snapshot
from agent.core.engine import load_kernel
from agent.core.site import Reading, SiteCore
from drivers.profile import ProfileLibrary
from drivers.quantities import Quantity

CASES = Path(__file__).resolve().parents[2] / "cases"
CASE = CASES / "replay-net-import"
LIBRARY = ProfileLibrary()
T0 = 1_709_251_200_000  # 2024-03-01 00:00 UTC

load_kernel()  # numba's default cache: the case's config names no state_dir


def _rows() -> list[Reading]:
    with (CASE / "readings.csv").open(newline="") as f:
        return [
            Reading(r["device"], int(r["ts"]), {Quantity(r["quantity"]): float(r["value"])})
            for r in csv.DictReader(f)
        ]


def _site(tmp: Path) -> SiteCore:
    config = load_config(CASE / "config.yaml")
    return SiteCore(config.model_copy(update={"state_dir": tmp}), LIBRARY)


def _feed(site: SiteCore, rows: list[Reading]) -> list[Message]:
    out: list[Message] = []
    for r in rows:
        out += site.feed([r], measurements=False)
        out += site.flush(now_ms=r.ts)
    return out


def _nets(ms: list[Message]) -> dict[int, dict[str, Any]]:
    """Per intensity record's ts, each window's net import (None: left out)."""
    return {
        m.payload["ts"]: {n: w.get("net_import_kwh") for n, w in m.payload["windows"].items()}
        for m in ms
        if m.topic.endswith("/intensity")
    }


def _pv_exports(ms: list[Message]) -> list[float | None]:
    return [m.payload.get("export_kwh") for m in ms if m.topic.endswith("/pv/energy")]


def test_net_import_survives_a_restart(tmp_path: Path) -> None:
    """A snapshot at 00:07 keeps the export sums of the series (slots and days): the
    restored core publishes at 00:10 what one run does, today's net 6.1 - 4.5 = 1.6."""
    rows = _rows()
    one = _site(tmp_path / "a")
    expected = _feed(one, rows) + one.flush()
    first = _site(tmp_path / "b")
    got = _feed(first, rows[:16])
    first.save_snapshot(tmp_path / "core.npz")
    saved = snapshot.read(tmp_path / "core.npz")
    # to 00:05: 3.5; 00:05-00:06: 0.5 + 0.1 - 0.5; 00:06-00:07: 0.5 - 1.0
    assert saved.arrays["series_net"].sum() == pytest.approx(3.5 + 0.1 - 0.5)
    assert saved.meta["series_net_from"] is None
    again = _site(tmp_path / "c")
    assert again.load_snapshot(tmp_path / "core.npz")
    got += _feed(again, rows[16:]) + again.flush()
    assert _nets(got) == _nets(expected)
    assert _nets(got)[T0 + 600_000]["today"] == 1.6
    assert _nets(got)[T0 + 600_000]["1m"] == -0.5
    assert _pv_exports(got) == [0.0, 4.5]


def test_a_snapshot_without_export_sums_leaves_net_out_of_windows_begun_before(
    tmp_path: Path,
) -> None:
    """tests/cases/series-v3-no-net/core.npz: written at 00:07 by the core before net
    import (its series has no export sums, its pv meter no export channel). It loads;
    the 00:10 record's windows that began before the restart (15m, 1h, 24h, today,
    month) leave net_import_kwh out rather than report an import without the export
    before it; the 1m window (00:09-00:10) has it: 0.5 - 60/60 = -0.5. pv's export
    channel is new: it counts from its first reading, 00:08 (2 x 60/60 = 2.0 kWh). The
    import numbers are those of one run."""
    golden = CASES / "series-v3-no-net"
    cut = json.loads((golden / "case.json").read_text())["cut"]
    rows = _rows()
    one = _site(tmp_path / "a")
    _feed(one, rows[:cut])
    expected = _feed(one, rows[cut:]) + one.flush()
    restored = _site(tmp_path / "b")
    assert restored.load_snapshot(golden / "core.npz")
    got = _feed(restored, rows[cut:]) + restored.flush()
    assert _nets(got) == {
        T0 + 600_000: {
            "1m": -0.5,
            "15m": None,
            "1h": None,
            "24h": None,
            "today": None,
            "month": None,
        }
    }
    assert _pv_exports(got) == [2.0]

    def imports(ms: list[Message]) -> list[Any]:
        return [
            {n: (w["energy_kwh"], w["co2_kg"]) for n, w in m.payload["windows"].items()}
            if m.topic.endswith("/intensity")
            else (m.topic, m.payload["energy_kwh"], m.payload["co2_kg"])
            for m in ms
        ]

    assert imports(got) == imports(expected)
    # A restart after the upgrade keeps what is not known: today stays without net.
    restored.save_snapshot(tmp_path / "again.npz")
    assert snapshot.read(tmp_path / "again.npz").meta["series_net_from"] is not None


def test_export_closed_late_revises_the_net_import_alone(tmp_path: Path) -> None:
    """tests/cases/replay-export's meter (import +1 kWh a minute to 00:10, then export
    +0.5), its export register unreadable from 00:11 to 00:19. The 00:15 record goes
    out after the hold (120 s) with the export after 00:10 not yet known: net 10 - 0.
    The reading of 205 at 00:20 spreads 2.5 kWh over 00:10-00:15: the 00:15 record is
    revised (rev 1) for its net import alone, 10 - 2.5 = 7.5; energy and CO2 stay."""
    config = load_config(CASES / "replay-export" / "config.yaml")
    site = SiteCore(config.model_copy(update={"state_dir": tmp_path}), LIBRARY)
    rows = []
    for m in range(21):
        values: dict[Quantity, float | None] = {Quantity.ENERGY_IMPORT_KWH: 1000.0 + min(m, 10)}
        values[Quantity.ENERGY_EXPORT_KWH] = None if 11 <= m <= 19 else 200 + 0.5 * max(0, m - 10)
        rows.append(Reading("m1", T0 + m * 60_000, values))
    ms = _feed(site, rows) + site.flush()
    at_15 = [
        (m.payload["rev"], m.payload["windows"]["today"])
        for m in ms
        if m.topic.endswith("/intensity") and m.payload["ts"] == T0 + 900_000
    ]
    assert [(rev, w["energy_kwh"], w["co2_kg"], w["net_import_kwh"]) for rev, w in at_15] == [
        (0, 10.0, 5.0, 10.0),
        (1, 10.0, 5.0, 7.5),
    ]


def test_a_power_reading_beyond_the_limit_is_one_glitch_event(tmp_path: Path) -> None:
    """pv's import and export channels read the same power: a reading of -10^7 kW at
    00:08 (beyond the 2 GW carrier default) is rejected by both, and reported once.
    Without it the export trapezoids bridge 00:07 -> 00:09: 60 x 2/60 = 2 kWh, so pv's
    00:10 export is 4.5 as in the clean case."""
    rows = _rows()
    glitch = next(i for i, r in enumerate(rows) if r.device == "pv" and r.ts == T0 + 480_000)
    rows[glitch] = Reading("pv", rows[glitch].ts, {Quantity.ACTIVE_POWER_KW: -1e7})
    site = _site(tmp_path)
    ms = _feed(site, rows) + site.flush()
    events = [m.payload for m in ms if m.topic.endswith("/events")]
    assert [(e["event"], e["quantity"], e["value"]) for e in events] == [
        ("glitch", "active_power_kw", -1e7)
    ]
    assert _pv_exports(ms) == [0.0, 4.5]
