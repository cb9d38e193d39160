"""drivers.hints: the hint fits the transport; a missing serial port is named as such."""

from __future__ import annotations

import grp
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from drivers.endpoint import Endpoint, Framing
from drivers.errors import ConnectionLost, DeviceBusy, ModbusExceptionResponse, ModbusTimeout
from drivers.hints import failure_hint, silent_bus_hint

ROOT = Path(__file__).resolve().parents[3]
TCP = Endpoint(Framing.TCP, host="10.0.0.7", port=502)
BOX = Endpoint(Framing.RTU_OVER_TCP, host="10.0.0.8", port=4001)
SERIAL_WORDS = ("baud", "parity", "wiring", "dialout", "/dev/")


def test_tcp_timeout_talks_about_unit_id_not_baud_rate() -> None:
    hint = failure_hint(TCP, ModbusTimeout("no response"), 3)
    assert "10.0.0.7:502 accepted the connection but unit 3 did not answer" in hint
    assert "unit id" in hint
    assert "baud" not in hint and "/dev/" not in hint


def test_tcp_refused_names_host_port_and_firewall() -> None:
    hint = failure_hint(TCP, ConnectionLost("cannot connect"), 1)
    assert "10.0.0.7:502" in hint and "firewall" in hint and "ping 10.0.0.7" in hint
    for word in SERIAL_WORDS:
        assert word not in hint


def test_serial_device_server_timeout_names_its_serial_side() -> None:
    hint = failure_hint(BOX, ModbusTimeout("no response"), 2)
    assert "serial device server at 10.0.0.8:4001" in hint and "baud rate" in hint


def test_missing_serial_port_has_its_own_hint(tmp_path: Path) -> None:
    port = str(tmp_path / "ttyUSB9")
    ep = Endpoint(Framing.RTU, device=port)
    for exc in (ConnectionLost("cannot open"), ModbusTimeout("no response")):
        hint = failure_hint(ep, exc, 1)
        assert hint.startswith(f"{port} does not exist")
        assert "/dev/serial/by-id/" in hint
    assert silent_bus_hint(ep).startswith(f"{port} does not exist")


def test_serial_timeout_names_the_line_settings(tmp_path: Path) -> None:
    port = tmp_path / "ttyS9"
    port.write_bytes(b"")  # exists and is readable: the line, not the port, is suspect
    ep = Endpoint(Framing.RTU, device=str(port), baudrate=19200, parity="E")
    hint = failure_hint(ep, ModbusTimeout("no response"), 5)
    assert f"no answer from unit 5 on {port}" in hint
    assert "19200 baud, 8E1" in hint and "A/B" in hint


def test_serial_port_without_permission_names_its_group() -> None:
    """Checked as the user `nobody` (the test may run as root, who may open anything)."""
    folder = Path(tempfile.mkdtemp(dir="/dev/shm"))
    try:
        folder.chmod(0o755)
        port = folder / "ttyS8"
        port.write_bytes(b"")
        # root's group, like /dev/ttyS*; a user who is not root owns the file: no rights at all
        port.chmod(0o660 if os.geteuid() == 0 else 0)
        group = grp.getgrgid(port.stat().st_gid).gr_name
        code = f"import drivers.hints as h; print(h.serial_port_problem({str(port)!r}))"
        as_other = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        if os.geteuid() != 0:
            as_other = []  # not root: the mode alone shuts the user out
        out = subprocess.run(
            [*as_other, sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        ).stdout
    finally:
        shutil.rmtree(folder)
    assert f"no permission to open {port}" in out
    assert f"usermod -aG {group} $USER" in out


def test_gateway_exception_and_illegal_address() -> None:
    busy = failure_hint(TCP, DeviceBusy(0x0B), 4)
    assert "gateway answered, unit 4 behind it did not" in busy
    illegal = failure_hint(TCP, ModbusExceptionResponse(0x02), 4)
    assert "no such register" in illegal and "profile" in illegal


def test_silent_tcp_bus_suggests_the_whole_unit_range() -> None:
    assert "--units 0-255" in silent_bus_hint(TCP)
    assert "raw TCP" in silent_bus_hint(BOX)
