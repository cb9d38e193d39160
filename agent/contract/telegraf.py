"""The Telegraf configuration, written from the contract: same schema as `energy-agent bridge`.

``python -m agent.contract.telegraf > deploy/telegraf/energy-agent.conf``; a test
keeps the committed file equal to this output. One ``mqtt_consumer`` per
InfluxDB measurement: the topics of its kinds, their ids as tags, and each
field where the record's rows put it (tag, field, an object's keys as fields,
or an object's entries as points of their own, split by a Starlark processor).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

from agent.contract.kinds import KindSpec, Scope, by_measurement
from agent.contract.schema import Field, JsonType, Record, Store
from agent.contract.vocab import DEFAULT_PREFIX

_HEADER = """\
# Telegraf: the energy-agent MQTT contract into InfluxDB, same schema as `energy-agent bridge`
# (docs/influxdb.md). For sites that already run Telegraf; the bridge is the reference
# implementation and the only one tested end to end (validation, dead letters, ack after
# write). Telegraf acknowledges MQTT messages once its output accepted them when
# `max_undelivered_messages` is reached, which is weaker than the bridge's ack-after-write.
#
# Generated from the contract (agent/contract/): python -m agent.contract.telegraf
#
# Environment: MQTT_URL (tcp://broker:1883 or ssl://broker:8883), MQTT_USER, MQTT_PASSWORD,
# INFLUX_URL, INFLUX_TOKEN, INFLUX_ORG, INFLUX_BUCKET.
#
# Ledger entries (energy/v1/+/+/ledger) are left out: only the bridge derives their
# database fields and verifies them (docs/ledger.md).

[agent]
  interval = "10s"
  flush_interval = "1s"
  metric_batch_size = 5000
  metric_buffer_limit = 200000
  omit_hostname = true
"""
_INPUT = "inputs.mqtt_consumer"
_JSON = f"{_INPUT}.json_v2"
_TYPES = {JsonType.INTEGER: "int", JsonType.NUMBER: "float", JsonType.STRING: "string"}


def _quoted(items: list[str]) -> str:
    return "[" + ", ".join(f'"{i}"' for i in items) + "]"


def _pattern(spec: KindSpec) -> tuple[str, str]:
    """The topic with wildcards, and Telegraf's tags of its levels (``_`` skips one)."""
    ids = ["site", "gateway"] + (["device"] if spec.scope is Scope.DEVICE else [])
    levels = DEFAULT_PREFIX.split("/")
    topic = "/".join([*levels, *("+" for _ in ids), spec.suffix])
    return topic, "/".join([*("_" for _ in levels), *ids, "_"])


def _fields(f: Field) -> Iterator[str]:
    """A row's json_v2 lines: a tag, a field, or an object's keys."""
    if f.store is Store.TAG:
        yield f"    [[{_JSON}.tag]]"
        yield f'      path = "{f.name}"'
        if not f.required:
            yield "      optional = true"
    elif f.store is Store.FIELD:
        yield f"    [[{_JSON}.field]]"
        yield f'      path = "{f.name}"'
        if f.db_name != f.name:
            yield f'      rename = "{f.db_name}"'
        yield f'      type = "{_TYPES[f.type]}"'
        if f.nullable or not f.required:
            yield "      optional = true"
    elif f.store is Store.KEYS_AS_FIELDS:
        yield f"    [[{_JSON}.object]]"
        yield f'      path = "{f.name}"'
        yield "      disable_prepend_keys = true"
    elif f.store is Store.KEYS_AS_POINTS:
        yield f"    [[{_JSON}.object]]"
        yield f'      path = "{f.name}"'


def _split(measurement: str, raw: str, f: Field) -> Iterator[str]:
    """json_v2 flattens an object of records into ``{key}_{field}``: one point per key."""
    assert f.keys is not None
    yield f"# json_v2 flattens {{{f.name!r}: {{key: {{field: ..}}}}}} into fields `key_field`;"
    yield f"# split them into one `{measurement}` point per {f.keys.noun}, tagged `{f.db_name}`"
    yield "# (nulls were never fields)."
    yield "[[processors.starlark]]"
    yield f"  namepass = {_quoted([raw])}"
    yield "  source = '''"
    yield f"KEYS = {_quoted(list(f.keys.names))}"
    yield "def apply(metric):"
    yield "    out = []"
    yield "    for key in KEYS:"
    yield f'        m = Metric("{measurement}")'
    yield "        for k, v in metric.tags.items():"
    yield "            m.tags[k] = v"
    yield f'        m.tags["{f.db_name}"] = key'
    yield "        for k, v in metric.fields.items():"
    yield '            if k.startswith(key + "_"):'
    yield "                m.fields[k[len(key) + 1:]] = float(v)"
    yield "        if len(m.fields) > 0:"
    yield "            m.time = metric.time"
    yield "            out.append(m)"
    yield "    return out"
    yield "'''"


def _codes(measurement: str, records: list[Record]) -> Iterator[str]:
    """Strings written as integers (status ``state`` -> ``up``): Telegraf's enum processor."""
    codes: dict[str, dict[str, int]] = {}
    for f in (f for r in records for f in r.fields if f.codes):
        codes.setdefault(f.db_name, {}).update(f.codes or {})
    for column, mapping in codes.items():
        yield ""
        yield "[[processors.enum]]"
        yield f"  namepass = {_quoted([measurement])}"
        yield "  [[processors.enum.mapping]]"
        yield f'    field = "{column}"'
        yield "    [processors.enum.mapping.value_mappings]"
        yield from (f"      {k} = {v}" for k, v in mapping.items())


def _consumer(measurement: str, specs: list[KindSpec]) -> Iterator[str]:
    records = list(dict.fromkeys(s.record for s in specs))
    fields = list({f.name: f for r in records for f in r.fields}.values())
    points = next((f for f in fields if f.store is Store.KEYS_AS_POINTS), None)
    name = f"{measurement}_raw" if points else measurement
    yield f"# --- {measurement}: one point per {specs[0].point} ".ljust(99, "-")
    yield f"[[{_INPUT}]]"
    yield '  servers = ["${MQTT_URL}"]'
    yield '  username = "${MQTT_USER}"'
    yield '  password = "${MQTT_PASSWORD}"'
    yield "  # A shared subscription: several Telegraf instances split the load."
    yield f"  topics = {_quoted([f'$share/telegraf/{_pattern(s)[0]}' for s in specs])}"
    yield f"  qos = {max(s.qos for s in specs)}"
    yield "  persistent_session = true"
    yield f'  client_id = "telegraf-{measurement}"'
    yield "  max_undelivered_messages = 1000"
    yield '  data_format = "json_v2"'
    for s in specs:
        topic, tags = _pattern(s)
        yield f"  [[{_INPUT}.topic_parsing]]"
        yield f'    topic = "{topic}"'
        yield f'    tags = "{tags}"'
    yield f"  [[{_JSON}]]"
    yield f'    measurement_name = "{name}"'
    yield '    timestamp_path = "ts"'
    yield '    timestamp_format = "unix_ms"'
    for f in fields:
        yield from _fields(f)
    yield from _codes(measurement, records)
    if points is not None:
        yield ""
        yield from _split(measurement, name, points)


def config() -> str:
    """The whole configuration file."""
    groups = {m: specs for m, specs in by_measurement().items() if all(s.telegraf for s in specs)}
    lines = [
        _HEADER,
        "[[outputs.influxdb_v2]]",
        '  urls = ["${INFLUX_URL}"]',
        '  token = "${INFLUX_TOKEN}"',
        '  organization = "${INFLUX_ORG}"',
        '  bucket = "${INFLUX_BUCKET}"',
        "  # Only the contract's measurements (not Telegraf's own).",
        f"  namepass = {_quoted(list(groups))}",
    ]
    for measurement, specs in groups.items():
        lines.append("")
        lines += _consumer(measurement, specs)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(config())
