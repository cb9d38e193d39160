"""Secret and certificate files: one reader, one rule, checked at load by `check` and `run` alike.

Hostile or careless files: a FIFO (blocked the event loop for good), /dev/zero
(2.4 GB read), a directory, a huge file, binary content. Each is refused quickly
with the config's file, line and field, never with the secret in the message.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.config import ConfigError, load_config
from agent.config.bridge import load_bridge_config
from agent.http.server import read_password
from agent.mqttclient import MqttConfigError, password_of, read_secret

GATEWAY = """\
site: {id: plant-a, timezone: Asia/Shanghai}
gateway: {id: gw-01}
buses:
  - {id: line-a, tcp: {host: 10.0.0.5, port: 502}}
devices:
  - {id: press-1, bus: line-a, unit: 1, profile: eastron-sdm630}
mqtt:
  host: broker.example
  username: gw-01
  password_file: PASSWORD
"""


def _within(seconds: float, fn: Callable[[], object]) -> object:
    """``fn()`` in a thread; fail if it has not returned within ``seconds`` (a FIFO hang)."""
    box: list[object] = []

    def target() -> None:
        try:
            box.append(fn())
        except (ConfigError, MqttConfigError, OSError) as exc:  # the errors under test
            box.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still reading after {seconds} s"
    return box[0]


def _fifo(tmp_path: Path) -> Path:
    path = tmp_path / "secret.fifo"
    os.mkfifo(path)
    return path


def _config(tmp_path: Path, password_file: Path | str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(GATEWAY.replace("PASSWORD", str(password_file)), encoding="utf-8")
    return path


# --- the one rule, the same through every reader ----------------------------------------------


@pytest.mark.parametrize(
    "content,secret",
    [
        ("s3cret", "s3cret"),
        ("s3cret\n", "s3cret"),
        ("  s3cret \r\n", "s3cret"),
        ("s3cret\n# rotated 2024-05; the first line is the password\n", "s3cret"),
        ("pass word with spaces\n", "pass word with spaces"),
    ],
)
def test_every_reader_takes_the_first_line(tmp_path: Path, content: str, secret: str) -> None:
    # Before: mqtt.password_file (and the bridge's token_file) took the whole file,
    # http.password_file the first line; a comment line became part of a password.
    path = tmp_path / "secret"
    path.write_text(content, encoding="utf-8")
    assert read_secret(path, "mqtt.password_file") == secret
    assert read_password(path) == secret


@pytest.mark.parametrize(
    "make,reason",
    [
        (lambda d: d / "missing", "No such file or directory"),
        (lambda d: d, "it is a directory, not a regular file"),
        (lambda d: Path("/dev/zero"), "it is a character device, not a regular file"),
        (_fifo, "it is a FIFO (named pipe), not a regular file"),
        (lambda d: _write(d / "big", b"x" * (64 * 1024 + 1)), "larger than 64 KiB"),
        (lambda d: _write(d / "empty", b"\n  \n"), "it is empty"),
        (lambda d: _write(d / "blank", b"\nsecret\n"), "its first line is empty"),
        (lambda d: _write(d / "latin1", b"caf\xe9\n"), "it is not UTF-8 text"),
    ],
)
def test_unusable_secret_files_are_refused_quickly(
    tmp_path: Path, make: Callable[[Path], Path], reason: str
) -> None:
    # Before: /dev/zero was read until memory ran out; a FIFO blocked forever.
    path = make(tmp_path)
    started = time.monotonic()
    result = _within(5.0, lambda: read_secret(path, "mqtt.password_file"))
    assert time.monotonic() - started < 2.0
    assert isinstance(result, MqttConfigError), result
    assert str(result).startswith(f"mqtt.password_file: cannot read {path}: ")
    assert reason in str(result)
    http = _within(5.0, lambda: read_password(path))
    assert isinstance(http, OSError) and reason in str(http), http


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_the_secret_is_never_in_a_message(tmp_path: Path) -> None:
    path = _write(tmp_path / "p", b"\xffhunter2-is-the-password\n")
    with pytest.raises(MqttConfigError) as info:
        read_secret(path, "mqtt.password_file")
    assert "hunter2" not in str(info.value)


# --- read at load, with the config's line; never again on the event loop -----------------------


def test_run_and_check_refuse_a_missing_password_file_with_its_line(tmp_path: Path) -> None:
    # Before: the loader passed it (`check` said OK) and `run` failed later, in its loop.
    config = _config(tmp_path, tmp_path / "nope.pass")
    with pytest.raises(ConfigError) as info:
        load_config(config)
    assert [str(p) for p in info.value.problems] == [
        f"{config}:10: mqtt.password_file: cannot read {tmp_path / 'nope.pass'}: "
        "No such file or directory"
    ]


def test_a_fifo_as_password_file_is_refused_at_load_without_blocking(tmp_path: Path) -> None:
    config = _config(tmp_path, _fifo(tmp_path))
    result = _within(5.0, lambda: load_config(config))
    assert isinstance(result, ConfigError), result
    assert "it is a FIFO (named pipe), not a regular file" in str(result)


def test_the_password_is_read_at_load_and_kept(tmp_path: Path) -> None:
    # `run` connects from its event loop; the file was read there before. Now it is
    # read once by the loader: the running agent no longer touches the file.
    secret = _write(tmp_path / "mqtt.pass", b"s3cret\n")
    config = load_config(_config(tmp_path, secret))
    secret.unlink()
    assert config.mqtt is not None
    assert password_of(config.mqtt) == "s3cret"
    # and it is in no dump or repr of the config
    assert "s3cret" not in repr(config) and "s3cret" not in str(config.model_dump())


def test_files_false_checks_the_document_only(tmp_path: Path) -> None:
    config = load_config(_config(tmp_path, "/etc/energy-agent/not-here.pass"), files=False)
    assert config.mqtt is not None and config.mqtt.password_file is not None


def test_the_bridge_token_file_and_ca_are_checked_at_load(tmp_path: Path) -> None:
    token = _write(tmp_path / "token", b"tok\n")
    path = tmp_path / "bridge.yaml"
    path.write_text(
        "mqtt: {host: broker.example}\n"
        f"influx: {{url: 'https://db:8086', org: o, bucket: b, token_file: {token},\n"
        f"         ca: {tmp_path / 'no-ca.pem'}}}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as info:
        load_bridge_config(path)
    assert [str(p) for p in info.value.problems] == [
        f"{path}:3: influx.ca: cannot read {tmp_path / 'no-ca.pem'}: No such file or directory"
    ]


# --- TLS files: loaded as the TLS library will, so `check` finds what `run` would refuse ----


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from agent import pki

    d = tmp_path_factory.mktemp("pki")
    pki.create_ca(d, "test CA")
    pki.issue(d, "gw", "plant-a/gw-01", pki.Purpose.CLIENT)
    pki.issue(d, "other", "plant-a/gw-02", pki.Purpose.CLIENT)
    return d


def _tls_config(tmp_path: Path, ca: Path, cert: Path, key: Path) -> Path:
    path = tmp_path / "config.yaml"
    text = GATEWAY.replace("  username: gw-01\n  password_file: PASSWORD\n", "")
    path.write_text(
        text + f"  tls:\n    ca: {ca}\n    cert: {cert}\n    key: {key}\n", encoding="utf-8"
    )
    return path


def test_valid_tls_files_pass(tmp_path: Path, pki_dir: Path) -> None:
    config = load_config(
        _tls_config(tmp_path, pki_dir / "ca.pem", pki_dir / "gw.pem", pki_dir / "gw.key")
    )
    assert config.mqtt is not None and config.mqtt.tls is not None


def _tls_problem(tmp_path: Path, ca: Path, cert: Path, key: Path) -> tuple[str, int | None, str]:
    """The one problem loading a config with these TLS files gives: path, line, message."""
    path = _tls_config(tmp_path, ca, cert, key)
    result = _within(10.0, lambda: load_config(path))  # OpenSSL's prompt would wait for a tty
    assert isinstance(result, ConfigError), result
    (problem,) = result.problems
    return problem.path, problem.line, problem.message


def test_a_key_that_does_not_match_its_certificate(tmp_path: Path, pki_dir: Path) -> None:
    # Before: `check` said OK; `run` failed in paho's tls_set.
    path, line, message = _tls_problem(
        tmp_path, pki_dir / "ca.pem", pki_dir / "gw.pem", pki_dir / "other.key"
    )
    assert (path, line) == ("mqtt.tls.cert", 11)
    assert "cannot be used as a client certificate (key values mismatch)" in message


def test_an_encrypted_key_is_refused_instead_of_prompting(tmp_path: Path, pki_dir: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key((pki_dir / "gw.key").read_bytes(), None)
    encrypted = tmp_path / "enc.key"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    path, line, message = _tls_problem(tmp_path, pki_dir / "ca.pem", pki_dir / "gw.pem", encrypted)
    assert (path, line) == ("mqtt.tls.key", 12)
    assert "is encrypted with a passphrase" in message


def test_a_ca_file_without_a_certificate(tmp_path: Path, pki_dir: Path) -> None:
    path, line, message = _tls_problem(
        tmp_path, pki_dir / "gw.key", pki_dir / "gw.pem", pki_dir / "gw.key"
    )
    assert (path, line) == ("mqtt.tls.ca", 10)
    assert "holds no certificate the TLS library accepts" in message
