"""`energy-agent keys`, `history export` and `verify` as a user runs them (subprocesses).

The history comes from the real History and Sealer (tests/support/ledger_gateway.py)
in a state_dir the config names; the end-to-end run with `run` itself is in
test_ledger.py.
"""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support.cli import Cli, env_with
from tests.support.ledger_gateway import LedgerGateway, energy, intensity

pytestmark = pytest.mark.integration

MIN = 60_000
T0 = 1_750_000_000_000 // (60 * MIN) * (60 * MIN)


def config(tmp: Path, state: Path) -> Path:
    doc = {
        "site": {"id": "plant-a", "timezone": "Asia/Shanghai"},
        "gateway": {"id": "gw-01"},
        "buses": [{"id": "b", "tcp": {"host": "127.0.0.1", "port": 1}}],
        "devices": [{"id": "m1", "bus": "b", "unit": 1, "profile": "eastron-sdm630"}],
        "state_dir": str(state),
        "ledger": {"period_s": 60},
    }
    path = tmp / "agent.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_keys_init_export_rotate(cli: Cli, tmp_path: Path) -> None:
    cfg = config(tmp_path, tmp_path / "state")
    done = cli.run("keys", "init", "-c", str(cfg))
    assert done.returncode == 0, done
    key = tmp_path / "state" / "ledger.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    before = key.read_bytes()
    again = cli.run("keys", "init", "-c", str(cfg))
    assert again.returncode == 2 and "exists" in again.stderr and "keys rotate" in again.stderr
    assert key.read_bytes() == before  # never overwritten without --force
    exported = cli.run("keys", "export", "-c", str(cfg))
    assert exported.returncode == 0
    line = [x for x in exported.stdout.splitlines() if not x.startswith("#")]
    assert yaml.safe_load(line[0]).keys() == {"plant-a/gw-01"}  # pastes into ledger.trust
    as_json = json.loads(cli.run("keys", "export", "-c", str(cfg), "--json").stdout)
    assert as_json["gateway"] == "plant-a/gw-01" and len(as_json["key"]) == 44
    rotated = cli.run("keys", "rotate", "-c", str(cfg))
    assert rotated.returncode == 0 and "announces it" in rotated.stdout
    assert stat.S_IMODE((tmp_path / "state" / "ledger.key.next").stat().st_mode) == 0o600
    pending = cli.run("keys", "export", "-c", str(cfg))
    assert "takes over with the next entry" in pending.stderr
    forced = cli.run("keys", "init", "-c", str(cfg), "--force")
    assert forced.returncode == 0 and key.read_bytes() != before


@pytest.fixture
def history(tmp_path: Path) -> tuple[Path, LedgerGateway]:
    state = tmp_path / "state"
    gw = LedgerGateway(state)
    gw.start(T0 + 5_000)
    for k in range(1, 11):
        end = T0 + k * MIN
        gw.publish(energy(gw.topics, "m1", end, 0.1 * k), intensity(gw.topics, end, 0.2))
        gw.seal(end + 10_000)
    gw.close()
    return config(tmp_path, state), gw


def test_an_export_of_a_span_verifies_and_holds_only_that_span(
    cli: Cli, tmp_path: Path, history: tuple[Path, LedgerGateway]
) -> None:
    cfg, _ = history
    ok = cli.run("verify", "-c", str(cfg))
    assert ok.returncode == 0 and "11 entries (seq 0..10), 10 periods" in ok.stdout, ok
    out = tmp_path / "part.jsonl"
    # T0 is 15:00 UTC, 23:00 in Asia/Shanghai: --to without an offset is the site's time.
    start = T0 + 3 * MIN
    done = cli.run(
        "history", "export", "-c", str(cfg), "--from", str(start),
        "--to", "2025-06-15T23:07:00", "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert lines[0]["type"] == "export" and lines[0]["from"] == start
    stamps = sorted({x["payload"]["ts"] for x in lines if x["type"] == "record"})
    assert stamps == [T0 + k * MIN for k in range(4, 8)]
    key = tmp_path / "gw.pub"
    key.write_text(cli.run("keys", "export", "-c", str(cfg)).stdout)
    checked = cli.run("verify", "--export", str(out), "--public-key", str(key))
    assert checked.returncode == 0, checked
    assert "4 periods" in checked.stdout


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ((), "give -c CONFIG"),
        (("--export", "x.jsonl"), "--export needs --public-key"),
    ],
)
def test_verify_usage_errors_exit_2(cli: Cli, args: tuple[str, ...], says: str) -> None:
    done = cli.run("verify", *args)
    assert done.returncode == 2 and says in done.stderr, done


def test_verify_says_what_is_wrong_with_its_inputs(cli: Cli, tmp_path: Path) -> None:
    cfg = config(tmp_path, tmp_path / "state")
    assert cli.run("keys", "init", "-c", str(cfg)).returncode == 0
    no_history = cli.run("verify", "-c", str(cfg))
    assert no_history.returncode == 2 and "no history here" in no_history.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"type": "export"}\nnot json\n')
    key = tmp_path / "k.pub"
    key.write_text(cli.run("keys", "export", "-c", str(cfg)).stdout)
    done = cli.run("verify", "--export", str(bad), "--public-key", str(key))
    assert done.returncode == 2 and f"{bad}:2: not JSON" in done.stderr, done
    key.write_text("not a key\n")
    done = cli.run("verify", "--export", str(bad), "--public-key", str(key))
    assert done.returncode == 2 and "--public-key" in done.stderr and "base64" in done.stderr


#: Makes `import cryptography` fail in a subprocess, as where it is not installed.
HIDE = "import sys; sys.modules['cryptography'] = None\n"


def test_without_cryptography_keys_says_how_to_install_it(tmp_path: Path) -> None:
    cfg = config(tmp_path, tmp_path / "state")
    code = HIDE + "from agent.cli.main import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run(
        [sys.executable, "-c", code, "keys", "init", "-c", str(cfg)],
        capture_output=True, text=True, env=env_with(None), timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "pip install 'energy-agent[ledger]'" in done.stderr
    assert "Traceback" not in done.stderr


def test_without_cryptography_the_history_runs_and_the_ledger_is_off_said_once(
    tmp_path: Path,
) -> None:
    cfg = config(tmp_path, tmp_path / "state")
    code = HIDE + (
        "import logging, json\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "from agent.config import load_config\n"
        "from agent.contract import Topics\n"
        "from agent.runtime.ledger import LedgerJob\n"
        f"c = load_config({str(cfg)!r})\n"
        "job = LedgerJob(c, Topics('energy/v1', 'plant-a', 'gw-01'))\n"
        f"assert job.start({T0}) == []\n"
        f"assert job.tick({T0} + 3_600_000, lambda: None) == []\n"
        "import dataclasses\n"
        "print(json.dumps(dataclasses.asdict(job.status())))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env_with(None),
        timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert status["on"] is False and "cryptography" in status["reason"]
    assert status["history"]["ok"] is True
    assert done.stderr.count("ledger off:") == 1
