"""Hostile and careless config files through the real CLI: `check` and `run` refuse alike.

Before, each of these passed `check` or crashed `run` with a traceback (exit 1):
an alias bomb (443 bytes -> 3.7 GB, MemoryError), a 100 MB file (2.6 GB, over
two minutes), Latin-1 or binary files (UnicodeDecodeError), 100,000 nested
brackets (RecursionError), ``!!python/name`` (ConstructorError); a missing
``password_file`` passed `check` and stopped `run`; ``password_file: /dev/zero``
read 2.4 GB, and a FIFO blocked the event loop so that SIGTERM was ignored.

Now every one is exit 2 with ``file:line: field: reason`` from both commands,
within seconds and a bounded peak memory, measured on the child process itself
(``os.wait4``'s resource usage, through a small launcher so that the
figure is not the pytest process's own size inherited at fork).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import peak_rss
from tests.support.cli import ROOT, cli_command, env_with

pytestmark = pytest.mark.integration

CASES = ROOT / "tests" / "cases"
#: Generous for a busy 2-core machine; before, the worst of these ran for minutes.
SECONDS = 30.0
#: Peak RSS of the whole `run` process (numba and pydantic loaded). Before: 2.4-3.7 GB.
PEAK_MB = 400.0

HEAD = """\
site: {id: plant-a, timezone: Asia/Shanghai}
gateway: {id: gw-01}
buses:
  - {id: line-a, tcp: {host: 10.0.0.5, port: 502}}
devices:
  - {id: press-1, bus: line-a, unit: 1, profile: eastron-sdm630}
"""


@dataclass(frozen=True)
class Measured:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    peak_mb: float

    def __str__(self) -> str:
        return (
            f"energy-agent {' '.join(self.args)} -> exit {self.returncode} in "
            f"{self.seconds:.1f} s, peak {self.peak_mb:.0f} MB\n"
            f"--- stdout\n{self.stdout}--- stderr\n{self.stderr}"
        )

    def refused(self) -> list[str]:
        """The error lines, after checking exit 2, no traceback, the time and memory bounds."""
        assert self.returncode == 2, str(self)
        assert "Traceback" not in self.stderr + self.stdout, str(self)
        assert self.seconds < SECONDS, str(self)
        assert self.peak_mb < PEAK_MB, str(self)
        return [line for line in self.stderr.splitlines() if line.startswith("error: ")]


def energy_agent(*args: str, cwd: Path, timeout: float = 120.0) -> Measured:
    """Run the CLI; time it, and take its own peak RSS from the kernel (tests.support.peak_rss)."""
    done = peak_rss.run([*cli_command(), *args], cwd=cwd, env=env_with(None), timeout=timeout)
    if done.timed_out:
        pytest.fail(f"energy-agent {' '.join(args)}: still running after {timeout} s")
    return Measured(args, done.returncode, done.stdout, done.stderr, done.seconds, done.peak_mb)


def both_refuse(config: str, cwd: Path, expected: list[str]) -> Measured:
    """`check` and `run` on ``config``: both exit 2 with the ``expected`` error lines."""
    results = [energy_agent(command, "-c", config, cwd=cwd) for command in ("check", "run")]
    for result in results:
        assert result.refused() == expected, str(result)
    return results[0]


# --- the golden cases, through the CLI -----------------------------------------------------------

HOSTILE_CASES = [
    "config-yaml-alias-bomb",
    "config-yaml-deep-nesting",
    "config-yaml-python-tag",
    "config-yaml-unknown-tag",
    "config-yaml-latin1",
    "config-yaml-binary",
    "config-mqtt-password-file-missing",
    "config-secret-files-unusable",
    "config-timezone-region-only",
]


@pytest.mark.parametrize("name", HOSTILE_CASES, ids=lambda n: n.removeprefix("config-"))
def test_check_and_run_refuse_alike(name: str) -> None:
    case = CASES / name
    expected = [f"error: {line}" for line in (case / "expected.err").read_text().splitlines()]
    check = both_refuse("config.yaml", case, expected)
    assert check.stderr.splitlines()[-1].endswith("; nothing was started"), str(check)


def test_bridge_refuses_what_check_refuses() -> None:
    case = CASES / "bridge-config-secret-files"
    expected = [f"error: {line}" for line in (case / "expected.err").read_text().splitlines()]
    assert energy_agent("check", "-c", "config.yaml", cwd=case).refused() == expected
    assert energy_agent("bridge", "-c", "config.yaml", cwd=case).refused() == expected


# --- made at run time: too big for the repository, or not files at all ---------------------


def test_a_100_mb_config_is_refused_unread(tmp_path: Path) -> None:
    with open(tmp_path / "config.yaml", "wb") as f:
        f.truncate(100 * 1024 * 1024)  # sparse: 100 MB to stat, nothing on the disk
    both_refuse(
        "config.yaml",
        tmp_path,
        [
            "error: config.yaml: (top level): cannot read the config file: it is larger "
            "than 1 MiB, the limit for the config file"
        ],
    )


def test_a_1_mib_config_of_tiny_values_stops_at_the_value_limit(tmp_path: Path) -> None:
    # The slowest document within the size limit: as many values as bytes allow.
    text = HEAD + "core: [" + "1," * (500 * 1024 - 100) + "1]\n"
    (tmp_path / "config.yaml").write_text(text)
    result = energy_agent("check", "-c", "config.yaml", cwd=tmp_path)
    assert result.refused() == [
        "error: config.yaml:7: (top level): more than 50,000 values (a config of 1,000 "
        "meters has about 13,000)"
    ], str(result)
    print(f"1 MiB of values: {result.seconds:.1f} s, peak {result.peak_mb:.0f} MB")


def test_100_000_nested_brackets(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(HEAD + "core: " + "[" * 100_000 + "]" * 100_000)
    both_refuse(
        "config.yaml",
        tmp_path,
        [
            "error: config.yaml:7: (top level): nested deeper than 32 levels (a config "
            "needs about 6)"
        ],
    )


@pytest.mark.parametrize("target", ["/dev/zero", "fifo"])
def test_config_path_that_is_no_file(tmp_path: Path, target: str) -> None:
    path = Path(target)
    if target == "fifo":
        path = tmp_path / "config.yaml"
        os.mkfifo(path)
    kind = "a character device" if target == "/dev/zero" else "a FIFO (named pipe)"
    both_refuse(
        str(path),
        tmp_path,
        [
            f"error: {path}: (top level): cannot read the config file: it is {kind}, "
            "not a regular file"
        ],
    )


@pytest.mark.parametrize("section", ["mqtt", "http"])
@pytest.mark.parametrize("target", ["/dev/zero", "fifo", "directory"])
def test_password_file_that_is_no_file(tmp_path: Path, section: str, target: str) -> None:
    # Before: /dev/zero was read to 2.4 GB; a FIFO blocked `run`'s event loop (SIGTERM
    # ignored, the test had to kill it); `check` said OK to all three.
    path = {"/dev/zero": Path("/dev/zero"), "fifo": tmp_path / "pw", "directory": tmp_path}[target]
    if target == "fifo":
        os.mkfifo(path)
    kind = {
        "/dev/zero": "a character device",
        "fifo": "a FIFO (named pipe)",
        "directory": "a directory",
    }[target]
    mqtt = "mqtt: {host: 127.0.0.1, port: 1}\n"
    if section == "mqtt":
        mqtt = f"mqtt: {{host: 127.0.0.1, port: 1, username: gw-01, password_file: {path}}}\n"
    http = f"http: {{listen: '127.0.0.1:0', password_file: {path}}}\n" if section == "http" else ""
    config = HEAD + mqtt + f"state_dir: {tmp_path / 'state'}\n" + http
    (tmp_path / "config.yaml").write_text(config)
    line = 7 if section == "mqtt" else 9
    expected = [
        f"error: config.yaml:{line}: {section}.password_file: cannot read {path}: it is "
        f"{kind}, not a regular file"
    ]
    both_refuse("config.yaml", tmp_path, expected)
    assert not (tmp_path / "state").exists()  # `run` started nothing


def test_example_configs_name_files_that_check_now_verifies() -> None:
    # The examples name a gateway's /etc/energy-agent files: on this machine `check`
    # lists each one with its line (as `run` would refuse them); --no-files checks the
    # document only, as for a config meant for another machine.
    example = "configs/gateway-example.yaml"
    if Path("/etc/energy-agent").exists():
        pytest.skip("this machine has /etc/energy-agent")
    lines = (ROOT / example).read_text().splitlines()
    ca, cert = (
        next(n for n, text in enumerate(lines, 1) if text.strip().startswith(key))
        for key in ("ca: /etc/energy-agent/ca.pem", "cert: /etc/energy-agent/mqtt.pem")
    )
    result = energy_agent("check", "-c", example, cwd=ROOT)
    assert result.refused() == [
        f"error: {example}:{ca}: mqtt.tls.ca: cannot read /etc/energy-agent/ca.pem: "
        "No such file or directory",
        f"error: {example}:{cert}: mqtt.tls.cert: cannot read /etc/energy-agent/mqtt.pem: "
        "No such file or directory",
    ], str(result)
    ok = energy_agent("check", "--no-files", "-c", example, cwd=ROOT)
    assert ok.returncode == 0 and "OK" in ok.stdout, str(ok)


def test_check_warns_in_the_words_run_refuses_with() -> None:
    # A config without `mqtt:` serves `replay`; `run` refuses it, and `check` says so.
    case = CASES / "config-yaml-alias-ok"
    check = energy_agent("check", "-c", "config.yaml", cwd=case)
    assert check.returncode == 0 and "OK" in check.stdout, str(check)
    run = energy_agent("run", "-c", "config.yaml", cwd=case)
    (error,) = run.refused()
    assert error.startswith("error: config.yaml: `run` needs an `mqtt:` section")
    # (beside what check warns about this machine, e.g. a state_dir not made yet)
    assert error.replace("error: ", "warning: ", 1) in check.stderr.splitlines(), str(check)
