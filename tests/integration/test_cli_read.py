"""`energy-agent read` shows what the register holds, every digit, against a real server.

The server is `energy-agent simulate` (pymodbus); the expected numbers come from
the registers read with pymodbus' own client and hand arithmetic, not from the
code under test.
"""

from __future__ import annotations

import json
import struct
from decimal import Decimal

import pytest
from pymodbus.client import ModbusTcpClient

pytestmark = pytest.mark.integration


def _registers(port: int, address: int, count: int, *, holding: bool = True) -> list[int]:
    client = ModbusTcpClient("127.0.0.1", port=port, timeout=2)
    try:
        assert client.connect()
        read = client.read_holding_registers if holding else client.read_input_registers
        response = read(address, count=count, device_id=1)
        assert not response.isError(), response
        return list(response.registers)
    finally:
        client.close()


def test_uint64_counter_near_wrap_prints_every_digit(cli, ports) -> None:
    port = ports()
    # abb-b23: energy_import_kwh is a uint64 in 0.01 kWh at holding 0x5000
    with cli.simulate(
        "--tcp", f"127.0.0.1:{port}", "--profile", "abb-b23", "--near-wrap", "1000", "--freeze"
    ):  # fmt: skip
        words = _registers(port, 0x5000, 4)
        table = cli.run("read", "--tcp", f"127.0.0.1:{port}", "--profile", "abb-b23")
        as_json = cli.run("read", "--tcp", f"127.0.0.1:{port}", "--profile", "abb-b23", "--json")
    raw = words[0] << 48 | words[1] << 32 | words[2] << 16 | words[3]
    # 1000 kWh = 100,000 hundredths below 2**64 - 1 (the simulator's float64 is within 4096)
    assert 95_000 < 2**64 - 1 - raw < 105_000, raw
    kwh, hundredths = divmod(raw, 100)
    assert as_json.returncode == 0, str(as_json)
    values = json.loads(as_json.stdout, parse_float=Decimal)
    assert values["energy_import_kwh"] == Decimal(f"{kwh}.{hundredths:02d}")
    assert table.returncode == 0, str(table)
    assert f"{kwh:,}.{hundredths:02d}" in table.stdout  # grouped: 184,467,440,737,0xx,xxx.xx
    assert "e+" not in table.stdout + table.stderr  # no 1.84467e+17 anywhere
    assert "uint64 @ 20480 (0x5000)" in table.stdout  # the register it came from
    assert f"reads {kwh}.{hundredths:02d}, outside its plausible range" in table.stderr


def test_float32_is_the_shortest_decimal_that_round_trips(cli, ports) -> None:
    port = ports()
    with cli.simulate("--tcp", f"127.0.0.1:{port}", "--profile", "eastron-sdm630", "--freeze"):
        words = _registers(port, 0, 2, holding=False)  # voltage_l1_v, input register 0
        result = cli.run(
            "read", "--tcp", f"127.0.0.1:{port}", "--profile", "eastron-sdm630", "--json"
        )
    assert result.returncode == 0, str(result)
    value = struct.unpack(">f", struct.pack(">2H", *words))[0]
    text = result.stdout.split('"voltage_l1_v": ', 1)[1].split(",", 1)[0]
    # the same float32, in at most 9 significant digits, and no shorter text would do
    assert struct.pack(">f", float(text)) == struct.pack(">2H", *words)
    digits = len(text.replace("-", "").replace(".", "").lstrip("0"))
    assert digits <= 9
    shorter = f"{value:.{digits - 1}g}"
    assert struct.pack(">f", float(shorter)) != struct.pack(">2H", *words)
    assert len(text) < len(repr(value))  # not the float64 noise 230.6063690185547
