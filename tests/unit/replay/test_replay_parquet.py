"""`replay --out FILE.parquet`: the records as rows, in the database schema's columns.

The golden cases' records (tests/cases/replay-*/expected.jsonl) are written with
:class:`ParquetOut` and read back with pyarrow: one row per energy record, per
intensity window, per event and per measured value, each number in the column of its
field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from agent.contract import Message, MessageKind
from agent.replay.writers import ParquetOut

CASES = Path(__file__).resolve().parents[2] / "cases"

#: The columns, as docs/influxdb.md's schema names them (the contract's fields).
COLUMNS = [
    "ts",
    "kind",
    "site",
    "gateway",
    "device",
    "window",
    "carrier",
    "quality",
    "root",
    "parent",
    "event",
    "quantity",
    "seq",
    "interval_s",
    "incomplete_children",
    "missing_count",
    "energy_kwh",
    "export_kwh",
    "co2_kg",
    "avg_power_kw",
    "ef_kg_per_kwh",
    "measured_share",
    "interpolated_share",
    "missing_share",
    "volume_m3",
    "units",
    "unmetered_kwh",
    "net_import_kwh",
    "output_units",
    "kwh_per_unit",
    "kgco2_per_unit",
    "intensity_g_per_kwh",
    "tce",
    "value",
    "limit_per_h",
]


def messages(case: str) -> list[Message]:
    lines = (CASES / case / "expected.jsonl").read_text().splitlines()
    return [Message.from_json_line(json.loads(line)) for line in lines]


def rows(tmp: Path, ms: list[Message]) -> list[dict[str, Any]]:
    out = ParquetOut(tmp / "out.parquet", "plant-a", "gw-01")
    out.write(ms)
    out.close()
    table = pq.read_table(tmp / "out.parquet")
    assert table.column_names == COLUMNS
    return [{k: v for k, v in r.items() if v is not None} for r in table.to_pylist()]


def test_energy_and_intensity_records_become_rows(tmp_path: Path) -> None:
    ms = messages("replay-gas-production")
    got = rows(tmp_path, ms)
    want = []
    for m in ms:
        p = m.payload
        base = {"kind": m.kind.value, "site": "plant-a", "gateway": "gw-01"}
        if m.kind is MessageKind.ENERGY:
            numbers = {k: v for k, v in p.items() if k != "ts" and v is not None}
            want.append({**base, "device": m.device, **numbers})
        else:
            for window, values in p["windows"].items():
                # the missing devices' names stay in MQTT (docs/influxdb.md)
                numbers = {
                    k: v for k, v in values.items() if v is not None and k != "missing_devices"
                }
                want.append({**base, "window": window, **numbers})
    assert [{k: v for k, v in r.items() if k != "ts"} for r in got] == want
    assert {m.kind for m in ms} == {MessageKind.ENERGY, MessageKind.INTENSITY}


def test_each_measured_value_is_a_row(tmp_path: Path) -> None:
    ms = [m for m in messages("replay-all-topics") if m.kind is MessageKind.MEASUREMENTS]
    keys = ("kind", "site", "gateway", "device", "seq", "quantity", "value")
    got = [{k: r[k] for k in keys if k in r} for r in rows(tmp_path, ms)]
    want = [
        {"kind": "measurements", "site": "plant-a", "gateway": "gw-01", "device": m.device}
        | {"seq": m.payload["seq"], "quantity": q}
        | ({"value": v} if v is not None else {})
        for m in ms
        for q, v in m.payload["values"].items()
    ]
    assert ms and got == want


def test_each_event_is_a_row(tmp_path: Path) -> None:
    """An event shares the quantity and value columns of a measured value."""
    ms = [
        Message.from_json_line(
            {
                "topic": "energy/v1/plant-a/gw-01/m1/events",
                "payload": {
                    "ts": ts,
                    "event": e,
                    "quantity": "energy_import_kwh",
                    "value": v,
                    "limit_per_h": 20.7,
                },
            }
        )
        for ts, e, v in [(1704067200000, "glitch", 0.0), (1704067260000, "reset", None)]
    ]
    got = [{k: v for k, v in r.items() if k != "ts"} for r in rows(tmp_path, ms)]
    base = {"kind": "events", "site": "plant-a", "gateway": "gw-01", "device": "m1"}
    assert got == [
        {**base, "event": "glitch", "quantity": "energy_import_kwh", "value": 0.0}
        | {"limit_per_h": 20.7},
        {**base, "event": "reset", "quantity": "energy_import_kwh", "limit_per_h": 20.7},
    ]
