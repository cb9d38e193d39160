"""SiteCore (kernel + series) against the brute-force site reference, over outages.

Hypothesis draws two to five root meters (electricity and gas, each polled at its
own period and rate) with independent outages of up to 40 days, starting near a
month end or a DST change in one of several zones (Europe/Berlin's DST days, a
half-hour zone), at 15-, 30- or 60-minute intervals. The readings are fed as the
running agent feeds them: a batch per quarter hour of the readings' clock, then
the hold on that clock; the end of the stream is flushed. Then, for every interval
that has an energy record:

* an intensity record exists, its revisions numbered 0, 1, 2 ... in order;
* its **last** revision equals :class:`agent.core.reference_site.ReferenceSite` on
  every slot row the engine closed (sums, shares, missing devices): the last
  revision is always right, however long the outage and however late it closed.
"""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.config.models import AgentConfig
from agent.core.engine import Closed, Engine, load_kernel
from agent.core.reference_site import ReferenceSite
from agent.core.site import Reading, SiteCore
from drivers.profile import ProfileLibrary
from drivers.quantities import Quantity

LIBRARY = ProfileLibrary()
load_kernel()
MIN = 60_000
DAY = 86_400_000
BATCH_MS = 15 * MIN


def _utc(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


#: Starts: hours before a month end, before the EU spring and autumn DST changes.
ANCHORS = [_utc("2024-01-30T20:00:00"), _utc("2024-03-29T10:00:00"), _utc("2024-10-25T07:00:00")]
ZONES = ["Europe/Berlin", "Asia/Kolkata", "Asia/Shanghai"]


class RecordingEngine(Engine):
    """The kernel's engine, keeping every slot row it hands the site."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.closed: list[Closed] = []

    def feed(self, chans: np.ndarray, ts: np.ndarray, vals: np.ndarray) -> Closed:
        out = super().feed(chans, ts, vals)
        self.closed.append(out)
        return out


#: What each kind of meter reads: a counter; an import and an export counter; power.
QUANTITIES = {
    "electricity": ["energy_import_kwh"],
    "gas": ["gas_volume_m3"],
    "export": ["energy_import_kwh", "energy_export_kwh"],
    "power": ["active_power_kw"],
}


def _config(tmp: Path, zone: str, interval_s: int, kinds: list[str]) -> AgentConfig:
    devices = []
    for k, kind in enumerate(kinds):
        registers = [
            {"quantity": q, "table": "input", "address": 4 * j, "type": "float64"}
            for j, q in enumerate(QUANTITIES[kind])
        ]
        devices.append(
            {
                "id": f"m{k + 1}",
                "bus": "bus-1",
                "unit": k + 1,
                "interval_s": 60,
                "kind": "gas" if kind == "gas" else "electricity",
                "registers": registers,
            }
        )
    return AgentConfig.model_validate(
        {
            "site": {"id": "plant-a", "timezone": zone},
            "gateway": {"id": "gw-01"},
            "carbon": {
                "electricity": {"kg_per_kwh": 0.5},
                "natural_gas": {"kg_per_m3": 2.0, "kwh_per_m3": 10.0},
            },
            "buses": [{"id": "bus-1", "tcp": {"host": "127.0.0.1"}}],
            "devices": devices,
            "publish": {"energy_interval_s": interval_s},
            "state_dir": str(tmp),
        }
    )


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(2, 5))
    span = draw(st.integers(1, 45)) * DAY
    meters = []
    for _ in range(n):
        outages = []
        for _ in range(draw(st.integers(0, 2))):
            start = draw(st.integers(0, span))
            length = draw(st.sampled_from([MIN * 20, 3_600_000 * 8, DAY + 10 * 3_600_000]))
            length = draw(st.one_of(st.just(length), st.integers(MIN, 40 * DAY)))
            outages.append((start, start + length))
        meters.append(
            {
                "kind": draw(st.sampled_from(list(QUANTITIES))),
                "period": draw(st.sampled_from([5, 10, 15, 30])) * MIN,
                "phase": draw(st.integers(0, 59)) * 1000,
                "outages": outages,
                "seed": draw(st.integers(0, 2**32 - 1)),
            }
        )
    return {
        "start": draw(st.sampled_from(ANCHORS)) + draw(st.integers(0, 6 * 60)) * MIN,
        "span": span,
        "zone": draw(st.sampled_from(ZONES)),
        "interval_s": draw(st.sampled_from([900, 1800, 3600])),
        "meters": meters,
    }


def _readings(sc: dict[str, Any]) -> list[Reading]:
    out = []
    for k, m in enumerate(sc["meters"]):
        rng = random.Random(m["seed"])
        quantities = [Quantity(q) for q in QUANTITIES[m["kind"]]]
        values = [rng.uniform(0, 1e5) for _ in quantities]
        t = sc["start"] + m["phase"]
        while t < sc["start"] + sc["span"]:
            for j, q in enumerate(quantities):
                if q is Quantity.ACTIVE_POWER_KW:
                    values[j] = rng.uniform(-20, 20)  # importing or exporting
                else:  # up to 20 kW (m3/h)
                    values[j] += rng.uniform(0, 20) * m["period"] / 3_600_000
            off = any(a <= t - sc["start"] < b for a, b in m["outages"])
            if not off:
                out.append(Reading(f"m{k + 1}", t, dict(zip(quantities, values, strict=True))))
            t += m["period"]
    out.sort(key=lambda r: (r.ts, r.device))
    return out


def _run(site: SiteCore, readings: list[Reading]) -> list[dict[str, Any]]:
    payloads: list[dict[str, Any]] = []
    batch: list[Reading] = []
    edge = None
    for r in [*readings, None]:
        if r is None or (edge is not None and r.ts >= edge):
            out = site.feed(batch, measurements=False) + site.flush(now_ms=batch[-1].ts)
            payloads += [m.payload for m in out if not m.topic.endswith("/events")]
            batch = []
        if r is None:
            break
        if not batch:
            edge = (r.ts // BATCH_MS + 1) * BATCH_MS
        batch.append(r)
    payloads += [m.payload for m in site.flush() if not m.topic.endswith("/events")]
    return payloads


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(sc=scenarios())
def test_the_last_revision_of_every_site_record_is_the_references(
    sc: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> None:
    tmp = tmp_path_factory.mktemp("site")
    config = _config(tmp, sc["zone"], sc["interval_s"], [m["kind"] for m in sc["meters"]])
    probe = SiteCore(config, LIBRARY)
    engine = RecordingEngine(
        probe.channels.specs,
        sc["interval_s"],
        demand=probe.channels.demand,
        align_offset_slots=probe.engine.align_offset_slots,
    )
    site = SiteCore(config, LIBRARY, engine=engine)
    payloads = _run(site, _readings(sc))

    ends = {p["ts"] for p in payloads if "interval_s" in p}
    revisions: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for p in payloads:
        if "windows" in p:
            revisions[p["ts"]].append(p)
    assert set(revisions) == ends
    assert all([p["rev"] for p in ps] == list(range(len(ps))) for ps in revisions.values())

    ref = ReferenceSite(
        site.channels.weights,
        [d.device.id for d in site.devices],
        site.factors,
        site.calendar,
        engine.interval_start_slot,
        engine.interval_ms,
    )
    for closed in engine.closed:
        s = closed.slots
        for row in zip(
            s.channel.tolist(),
            s.slot.tolist(),
            s.energy.tolist(),
            s.measured_ms.tolist(),
            s.interpolated_ms.tolist(),
            strict=True,
        ):
            ref.add(*row)
    for ts, ps in revisions.items():
        want = ref.windows(ts)
        for name, got in ps[-1]["windows"].items():
            w = want[name]
            where = f"{name} at {ts} (rev {ps[-1]['rev']})"
            assert got["energy_kwh"] == pytest.approx(w.energy_kwh, rel=1e-9, abs=1e-6), where
            assert got["co2_kg"] == pytest.approx(w.co2_kg, rel=1e-9, abs=1e-6), where
            assert got["tce"] == pytest.approx(w.kgce / 1000, rel=1e-9, abs=1e-9), where
            assert got["measured_share"] == pytest.approx(w.measured_share, abs=2e-9), where
            assert got["interpolated_share"] == pytest.approx(w.interpolated_share, abs=2e-9)
            assert got["missing_share"] == pytest.approx(w.missing_share, abs=2e-9), where
            assert got["missing_devices"] == list(w.missing[:5]), where
            assert got["missing_count"] == len(w.missing), where
            if w.net_import_kwh is None:
                assert "net_import_kwh" not in got, where
            else:
                net = pytest.approx(w.net_import_kwh, rel=1e-9, abs=1e-6)
                assert got["net_import_kwh"] == net, where
