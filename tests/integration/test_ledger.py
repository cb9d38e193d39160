"""The ledger end to end: real `run`, mosquitto, the bridge and VictoriaMetrics.

A gateway (``energy-agent run``, simulated meters) seals one-minute ledger
periods; a bridge with the gateway's public key in its trust store verifies
every entry against the energy records it reads back from VictoriaMetrics.
Meanwhile the test tampers with the database as someone with write access
could: it deletes one record (a whole series: VictoriaMetrics deletes series,
not samples; the device's first record is the only one with quality
``partial``) and writes a conflicting point 0.001 kWh *above* another record
(VictoriaMetrics runs with ``-dedup.minScrapeInterval=1ms`` as shipped, and its
deduplication keeps the largest value of one millisecond: a change downwards
would be ignored by the database itself). A second gateway, built in this
process with the real history and sealer, publishes its chain with one entry
removed and one re-signed with another key. Every tampering must be found with
its reason, every untouched period verified.

Then the gateway's own history verifies (the database was tampered with, not
the history), its export verifies with the key from `keys export`, and each
tampering of the export is found with its reason: an energy value changed by
0.001 kWh, a record deleted, an entry deleted, an entry re-signed with another
key, two entries swapped.

The second scenario kills the gateway with SIGKILL in the middle of a period
and across a period's end: the chain continues without a gap and without two
different entries of one seq, and `verify -c` passes.

Both scenarios mostly wait for minute boundaries and run side by side (about
five minutes together).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from agent.contract import MessageKind, encode
from agent.contract.points import Point
from agent.ledger import entry as le
from agent.ledger.entry import Reason
from agent.ledger.keys import SigningKey
from agent.store.victoria import VictoriaMetricsStore
from tests.support.bridge import LOOPBACK, Stack, have_victoria_metrics
from tests.support.cli import free_port
from tests.support.ledger_gateway import LedgerGateway, energy, intensity
from tests.support.mqtt import (
    AgentProcess,
    Broker,
    Subscriber,
    agent_config,
    have_mosquitto,
    next_boundary,
    sleep_until_wall,
    wait_until,
)
from tests.support.simulators import Simulators

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not have_mosquitto(), reason="mosquitto is not installed"),
    pytest.mark.skipif(not have_victoria_metrics(), reason="victoria-metrics is not installed"),
]

SITE, GW, SYN = "plant-t", "gw-t", "gw-s"
MIN = 60_000
#: The gateway's settings: one-minute periods, sealed 12 s after their end.
LEDGER = {"period_s": 60, "seal_delay_s": 12}
CORE = {"site_hold_s": 5}
VERIFY_AFTER_S = 10
#: One compiled-kernel cache for both scenarios' agents.
NUMBA: dict[str, str] = {}


def meters(sim: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    bus = {"id": "line-a", "tcp": {"host": sim.endpoint.host, "port": sim.endpoint.port}}
    devices = [
        {"id": "m1", "bus": "line-a", "unit": 1, "profile": "eastron-sdm630"},
        {"id": "m2", "bus": "line-a", "unit": 2, "profile": "schneider-iem3255"},
    ]
    return [bus], devices


async def cli_ok(cli: Any, *args: str) -> str:
    result = await cli.run_async(*args, time_limit=60)
    assert result.returncode == 0, str(result)
    return str(result.stdout)


def store(url: str) -> VictoriaMetricsStore:
    return VictoriaMetricsStore(url)


async def points(url: str, measurement: str, gateway: str) -> list[Point]:
    return await asyncio.to_thread(
        store(url).points, measurement, SITE, gateway, 0, int(time.time() * 1000) + 3_600_000
    )


def _post(url: str, data: bytes = b"") -> None:
    req = urllib.request.Request(url, data=data, method="POST")
    with urllib.request.urlopen(req, timeout=10) as answer:  # loopback only
        answer.read()


async def verdicts(url: str, gateway: str) -> dict[int, dict[str, float]]:
    """The end of an entry's period (ms) -> its ledger point's fields, once it has a verdict."""
    out = {}
    for p in await points(url, "ledger", gateway):
        if "seq" in p.fields and "verified" in p.fields:
            out[p.ts] = p.fields
    return out


def by_seq(v: dict[int, dict[str, float]]) -> dict[int, dict[str, float]]:
    return {int(f["seq"]): f for f in v.values()}


# --- scenario 1: verification at the bridge, tampering ---------------------------------------


@dataclass
class Outcome:
    error: BaseException | None = None
    report: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    def check(self) -> dict[str, Any]:
        if self.error is not None:
            print(self.report)
            raise self.error
        return self.data


async def synthetic_chain(tmp: Path, publish: Callable[[str, bytes], None]) -> SigningKey:
    """The second gateway: four periods in the recent past, published with entry 2
    left out and entry 4 re-signed by another key. Returns its (trusted) key."""
    gw = LedgerGateway(tmp / "synthetic", site=SITE, gateway=SYN)
    t0 = (int(time.time() * 1000) // MIN - 6) * MIN
    sealed = gw.start(t0 + 1000)
    for k in range(4):
        end = t0 + (k + 1) * MIN
        gw.publish(energy(gw.topics, "p1", end, 0.25 + k / 100), intensity(gw.topics, end, 0.25))
        sealed += gw.seal(end + 20_000)
    assert [json.loads(s.payload)["seq"] for s in sealed] == [0, 1, 2, 3, 4]
    attacker = SigningKey.generate()
    entries = [json.loads(s.payload) for s in sealed]
    forged = {k: v for k, v in entries[4].items() if k != "sig"}
    forged |= {"key": attacker.public.b64, "key_id": attacker.public.key_id}
    forged["sig"] = attacker.sign(le.signed_bytes(forged))
    for m in gw.published:
        publish(m.topic, encode(m.payload))
    for e in (entries[0], entries[1], entries[3], forged):
        publish(gw.topics.topic(MessageKind.LEDGER), json.dumps(e).encode())
    key = gw.sealer.key
    assert key is not None
    gw.close()
    return key


async def gateway(tmp: Path, cli: Any, sims: Simulators, broker_port: int) -> Path:
    """Two simulated meters and the config of a gateway reading them, its key made."""
    sim = await sims.start(
        sims.tcp_endpoint(), {1: "eastron-sdm630", 2: "schneider-iem3255"}, frozen=False
    )
    buses, devices = meters(sim)
    config = agent_config(
        tmp,
        buses=buses,
        devices=devices,
        mqtt={"host": LOOPBACK, "port": broker_port},
        core=CORE,
        ledger=LEDGER,
    )
    await cli_ok(cli, "keys", "init", "-c", str(config))
    return config


async def bridge_scenario(tmp: Path, cli: Any, stack: Stack, sims: Simulators) -> dict[str, Any]:
    config = await gateway(tmp, cli, sims, stack.mqtt_port)
    exported = json.loads(await cli_ok(cli, "keys", "export", "-c", str(config), "--json"))
    publisher = stack.publisher()
    sent: list[tuple[str, bytes]] = []
    syn_key = await synthetic_chain(tmp, lambda t, p: sent.append((t, p)))
    bridge = stack.bridge(
        "bridge-ledger",
        ledger={
            "trust": {f"{SITE}/{GW}": exported["key"], f"{SITE}/{SYN}": syn_key.public.b64},
            "verify_after_s": VERIFY_AFTER_S,
            "retries": 2,
            "database": "victoriametrics",
        },
    )
    bridge.start()
    await bridge.wait_ready()
    await publisher.publish_all(sent)
    # Room before the first boundary: the first record must close in the first period.
    if next_boundary(time.time()) - time.time() < 20:
        await sleep_until_wall(next_boundary(time.time()) + 1)
    agent = AgentProcess(cli.command, config, tmp / "agent.log", env=NUMBA).start()
    vm = stack.vm.url
    try:
        # Tampering 1: m1's first record (the only one with quality partial) deleted.
        def m1_first(ps: list[Point]) -> bool:
            return any(p.tags.get("device") == "m1" for p in ps)

        got = await wait_until_async(
            lambda: points(vm, "energy", GW), m1_first, 150, "m1's first record"
        )
        (first,) = [p for p in got if p.tags.get("device") == "m1"]
        assert first.tags["quality"] == "partial", first
        b1 = first.ts // 1000
        match = f'{{__name__=~"energy_.+",gateway="{GW}",device="m1",quality="partial"}}'
        await asyncio.to_thread(
            _post,
            f"{vm}/api/v1/admin/tsdb/delete_series?{urllib.parse.urlencode({'match[]': match})}",
        )
        # Tampering 2: m2's record at b2, 0.001 kWh more.
        b2 = b1 + 60

        def m2_second(ps: list[Point]) -> bool:
            return any(p.tags.get("device") == "m2" and p.ts == b2 * 1000 for p in ps)

        got = await wait_until_async(
            lambda: points(vm, "energy", GW), m2_second, 90, "m2's record at b2"
        )
        (rec,) = [p for p in got if p.tags.get("device") == "m2" and p.ts == b2 * 1000]
        tags = ",".join(f"{k}={v}" for k, v in sorted(rec.tags.items()))
        changed = float(rec.fields["energy_kwh"]) + 0.001
        await asyncio.to_thread(
            _post,
            f"{vm}/api/v2/write?precision=ms",
            f"energy,{tags} energy_kwh={changed!r} {b2 * 1000}".encode(),
        )

        ends = [(b1 + 60 * k) * 1000 for k in range(4)]

        def four_verdicts(v: dict[int, dict[str, float]]) -> bool:
            return all(end in v for end in ends) and 0 in by_seq(v)

        gw_verdicts = await wait_until_async(
            lambda: verdicts(vm, GW), four_verdicts, b1 + 180 - time.time() + 120, "the verdicts"
        )
        syn_verdicts = by_seq(
            await wait_until_async(
                lambda: verdicts(vm, SYN), lambda v: len(v) >= 4, 120, "the 2nd gateway's verdicts"
            )
        )
        metrics = await asyncio.to_thread(bridge.metrics)
        assert await agent.terminate() == 0, agent.output()[-3000:]
        state = tmp / "state"
        return {
            "config": config,
            "gw": gw_verdicts,
            "ends": ends,
            "syn": syn_verdicts,
            "metrics": metrics,
            "bridge_log": bridge.output(),
            "agent_log": agent.output(),
            "state": state,
            "key": exported,
        }
    finally:
        agent.cleanup()


async def wait_until_async(
    read: Callable[[], Any], ok: Callable[[Any], bool], within: float, what: str
) -> Any:
    deadline = time.monotonic() + within
    while True:
        got = await read()
        if ok(got):
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:.0f} s waiting for {what}: {got}")
        await asyncio.sleep(0.5)


# --- scenario 2: kill -9 ---------------------------------------------------------------------


async def kill_scenario(tmp: Path, cli: Any, sims: Simulators) -> dict[str, Any]:
    broker = Broker(tmp / "broker", free_port())
    await broker.start()
    sub = await Subscriber(
        broker.port, "ledger-watch", topic=f"energy/v1/{SITE}/{GW}/ledger"
    ).start()
    config = await gateway(tmp, cli, sims, broker.port)
    agents: list[AgentProcess] = []

    def start(n: int) -> AgentProcess:
        a = AgentProcess(cli.command, config, tmp / f"agent-{n}.log", env=NUMBA).start()
        agents.append(a)
        return a

    def seqs() -> list[int]:
        return sorted({m.json()["seq"] for m in sub.received()})

    try:
        agent = start(1)
        b1 = next_boundary(time.time() + 5)
        # Entry 1 (the first period) is out.
        await wait_until(lambda: 1 in seqs(), b1 - time.time() + 60, "entry 1")
        # kill -9 in the middle of a period.
        await sleep_until_wall(next_boundary(time.time()) + 30)
        agent.kill9()
        await asyncio.sleep(3)
        agent = start(2)
        # kill -9 across a period's end: 5 s before it, back 5 s after it.
        end = next_boundary(time.time() + 15)
        await sleep_until_wall(end - 5)
        agent.kill9()
        await sleep_until_wall(end + 5)
        agent = start(3)
        # kill -9 about when that period is sealed (12 s after its end + the 12 s grace).
        await sleep_until_wall(end + 18)
        agent.kill9()
        agent = start(4)
        last = max(seqs())
        await wait_until(lambda: max(seqs()) >= last + 2, 200, "two more entries after the kills")
        assert await agent.terminate() == 0, agent.output()[-3000:]
        return {
            "config": config,
            "received": [(m.json()["seq"], m.payload) for m in sub.received()],
            "logs": "\n".join(a.output()[-3000:] for a in agents),
        }
    finally:
        for a in agents:
            a.cleanup()
        await sub.stop()
        await broker.stop()


# --- both, side by side ----------------------------------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def runs(
    tmp_path_factory: pytest.TempPathFactory, cli: Any
) -> AsyncIterator[dict[str, Outcome]]:
    outcomes = {"bridge": Outcome(), "kill": Outcome()}
    NUMBA["NUMBA_CACHE_DIR"] = str(tmp_path_factory.mktemp("numba-cache"))

    async def bridge_run() -> None:
        tmp = tmp_path_factory.mktemp("ledger-bridge")
        try:
            async with contextlib.AsyncExitStack() as es:
                stack = await es.enter_async_context(Stack(tmp, free_port, cli.command))
                sims = Simulators(es)
                outcomes["bridge"].data = await bridge_scenario(tmp, cli, stack, sims)
        except BaseException as exc:  # noqa: BLE001 - reported by the tests that need it
            outcomes["bridge"].error = exc
            outcomes["bridge"].report = "\n".join(
                f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}"
                for p in sorted(tmp.glob("*.log"))
            )

    async def kill_run() -> None:
        tmp = tmp_path_factory.mktemp("ledger-kill")
        try:
            async with contextlib.AsyncExitStack() as es:
                outcomes["kill"].data = await kill_scenario(tmp, cli, Simulators(es))
        except BaseException as exc:  # noqa: BLE001 - reported by the tests that need it
            outcomes["kill"].error = exc
            outcomes["kill"].report = "\n".join(
                f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}"
                for p in sorted(tmp.glob("*.log"))
            )

    await asyncio.gather(bridge_run(), kill_run())
    yield outcomes


# --- the checks ------------------------------------------------------------------------------


def test_the_bridge_verifies_every_untouched_period(runs: dict[str, Outcome]) -> None:
    data = runs["bridge"].check()
    v = data["gw"]
    genesis = by_seq(v)[0]
    assert genesis["verified"] == 1 and genesis["records"] == 0, genesis
    for end in data["ends"][2:]:
        assert v[end]["verified"] == 1, (end, v[end], data["bridge_log"][-3000:])
        assert v[end]["reason"] == 0
        # Two meters, one record each per one-minute period.
        assert v[end]["records"] == 2, v[end]
    m = data["metrics"]
    assert m['energy_bridge_ledger_entries_total{result="verified"}'] >= 3 + 2
    assert m['energy_bridge_ledger_verified{gateway="gw-t",site="plant-t"}'] == 1


def test_a_record_deleted_in_the_database_is_found(runs: dict[str, Outcome]) -> None:
    data = runs["bridge"].check()
    v = data["gw"][data["ends"][0]]
    assert v["verified"] == 0 and v["reason"] == Reason.RECORD_MISSING.code, v
    said = f"entry {int(v['seq'])}: record missing: energy records: 2 in the entry, 1 found"
    assert said in data["bridge_log"], data["bridge_log"][-3000:]
    assert data["metrics"]['energy_bridge_ledger_failures_total{reason="record_missing"}'] >= 1


def test_a_record_changed_by_a_thousandth_of_a_kwh_in_the_database_is_found(
    runs: dict[str, Outcome],
) -> None:
    data = runs["bridge"].check()
    v = data["gw"][data["ends"][1]]
    assert v["verified"] == 0 and v["reason"] == Reason.RECORD_CHANGED.code, v
    assert data["metrics"]['energy_bridge_ledger_failures_total{reason="record_changed"}'] >= 1
    # Logged once an hour per gateway: the failure of the period before was the line.
    assert f"entry {int(v['seq'])}: record changed" not in data["bridge_log"]


def test_a_removed_entry_and_a_re_signed_one_are_found_at_the_bridge(
    runs: dict[str, Outcome],
) -> None:
    v = runs["bridge"].check()["syn"]
    assert v[0]["verified"] == 1 and v[1]["verified"] == 1, v
    assert 2 not in v
    assert v[3]["verified"] == 0 and v[3]["reason"] == Reason.ENTRY_MISSING.code, v[3]
    assert v[4]["verified"] == 0 and v[4]["reason"] == Reason.SIGNATURE_WRONG.code, v[4]


# --- offline: the history and its export -----------------------------------------------------


async def export_of(cli: Any, data: dict[str, Any], tmp: Path) -> tuple[list[str], Path]:
    out = tmp / "export.jsonl"
    await cli_ok(cli, "history", "export", "-c", str(data["config"]), "--out", str(out))
    key = tmp / "gw.pub"
    key.write_text(await cli_ok(cli, "keys", "export", "-c", str(data["config"])))
    return out.read_text().splitlines(), key


async def verify_lines(cli: Any, lines: list[str], key: Path, tmp: Path, name: str) -> Any:
    path = tmp / f"{name}.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return await cli.run_async("verify", "--export", str(path), "--public-key", str(key))


async def test_the_gateways_history_and_its_export_verify(
    runs: dict[str, Outcome], cli: Any, tmp_path: Path
) -> None:
    data = runs["bridge"].check()
    result = await cli.run_async("verify", "-c", str(data["config"]))
    assert result.returncode == 0, str(result)
    assert ": OK: " in result.stdout
    lines, key = await export_of(cli, data, tmp_path)
    result = await verify_lines(cli, lines, key, tmp_path, "untouched")
    assert result.returncode == 0, str(result)


def _records(lines: list[str]) -> list[tuple[int, dict[str, Any]]]:
    return [(i, json.loads(t)) for i, t in enumerate(lines) if json.loads(t)["type"] == "record"]


def _entries(lines: list[str]) -> list[tuple[int, dict[str, Any]]]:
    return [(i, json.loads(t)) for i, t in enumerate(lines) if json.loads(t)["type"] == "ledger"]


def _sealed_energy(lines: list[str]) -> tuple[int, dict[str, Any]]:
    """An energy record a ledger entry covers (not pending), in a middle period."""
    out = [
        (i, r) for i, r in _records(lines) if r["topic"].endswith("/energy") and not r["pending"]
    ]
    return out[len(out) // 2]


async def test_each_tampering_of_an_export_is_found_with_its_reason(
    runs: dict[str, Outcome], cli: Any, tmp_path: Path
) -> None:
    data = runs["bridge"].check()
    lines, key = await export_of(cli, data, tmp_path)
    cases: dict[str, tuple[list[str], str]] = {}

    i, rec = _sealed_energy(lines)
    changed = json.loads(lines[i])
    changed["payload"]["energy_kwh"] = round(rec["payload"]["energy_kwh"] + 0.001, 9)
    cases["changed"] = (
        [*lines[:i], json.dumps(changed), *lines[i + 1 :]],
        Reason.RECORD_CHANGED.words,
    )
    cases["deleted"] = ([*lines[:i], *lines[i + 1 :]], Reason.RECORD_MISSING.words)
    entries = _entries(lines)
    j, _ = entries[2]
    cases["entry removed"] = ([*lines[:j], *lines[j + 1 :]], Reason.ENTRY_MISSING.words)
    other = SigningKey.generate()
    forged = json.loads(lines[j])
    body = {k: v for k, v in forged["entry"].items() if k != "sig"}
    body |= {"key": other.public.b64, "key_id": other.public.key_id}
    forged["entry"] = {**body, "sig": other.sign(le.signed_bytes(body))}
    cases["re-signed"] = (
        [*lines[:j], json.dumps(forged), *lines[j + 1 :]],
        Reason.SIGNATURE_WRONG.words,
    )
    k, _ = entries[3]
    swapped = list(lines)
    swapped[j], swapped[k] = lines[k], lines[j]
    cases["swapped"] = (swapped, Reason.CHAIN_BROKEN.words)
    for name, (tampered, reason) in cases.items():
        result = await verify_lines(cli, tampered, key, tmp_path, name.replace(" ", "-"))
        assert result.returncode == 1, (name, str(result))
        assert f": {reason}: " in result.stderr, (name, result.stderr)
        assert "period 20" in result.stderr, (name, result.stderr)


# --- kill -9 ---------------------------------------------------------------------------------


async def test_kill_9_mid_period_and_across_a_period_end_leaves_no_gap_and_no_duplicate(
    runs: dict[str, Outcome], cli: Any
) -> None:
    data = runs["kill"].check()
    first: dict[int, bytes] = {}
    for seq, payload in data["received"]:
        assert first.setdefault(seq, payload) == payload, f"two different entries of seq {seq}"
    assert sorted(first) == list(range(max(first) + 1)), sorted(first)
    assert max(first) >= 4, sorted(first)  # the genesis, the periods the kills spanned, two more
    result = await cli.run_async("verify", "-c", str(data["config"]))
    assert result.returncode == 0, str(result) + data["logs"]
    assert "Traceback" not in data["logs"], data["logs"]
