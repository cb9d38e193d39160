"""numba's cache of the bulk verification's kernels, filled at install time.

deploy/install.sh runs :func:`warm` with NUMBA_CACHE_DIR at the agent's cache (as it
warms the core's): the first report after an install then loads the kernels rather
than compiling them (about 10 s here, more on an ARM board). A module of its own: it
writes a history with the agent's writer, which the report's modules never import.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from agent.contract import Carrier, MessageKind, Topics, encode, parse_topic
from agent.contract.build import energy_payload, intensity_payload, window_values
from agent.history.writer import History, new_record
from agent.ledger.bulk import HOUR_MS, Periods, available, settle
from agent.ledger.canonical import Group


def warm() -> bool:
    """Compile every kernel: a few records of each kind in a throwaway history,
    verified in bulk through the path a report takes, so the types compiled are the
    ones a report asks for. False without numba."""
    if not available():
        return False
    topics = Topics("energy/v1", "site", "gw")
    hour = 1_800_000_000_000 // HOUR_MS * HOUR_MS
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "history.db"
        history = History(path, max_bytes=2**30, retention_months=1)
        try:
            batch = []
            for k in range(1, 3):
                ts = hour + k * 60_000
                p = energy_payload(
                    ts=ts, interval_s=60, carrier=Carrier.ELECTRICITY, energy_kwh=1.25e-05 * k,
                    co2_kg=0.5, ef_kg_per_kwh=0.5, quality="measured",
                )  # fmt: skip
                m = topics.message(MessageKind.ENERGY, p, "m1")
                batch.append(new_record(parse_topic(m.topic), m.topic, p, encode(p)))
                p = intensity_payload(ts, {"1m": window_values(1.0, 0.5, 0.0, 0.1)})
                m = topics.message(MessageKind.INTENSITY, p)
                batch.append(new_record(parse_topic(m.topic), m.topic, p, encode(p)))
            history.put(batch)
        finally:
            history.close()
        cover = {g.value: {"records": 0, "hash": ""} for g in Group}
        plan = Periods([(hour, hour + HOUR_MS)], [cover], [True])
        done = settle(
            path, (hour, hour + HOUR_MS), plan, upto=2**62, prefix="energy/v1",
            check_rollup=True, workers=1,
        )  # fmt: skip
    return done is not None and done.records == 2
