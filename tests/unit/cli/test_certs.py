"""`energy-agent certs`: the files a pilot gets, their modes, and what they certify.

The chain is checked with cryptography's own path validation (the same rules as a
strict TLS client) and, in the integration test at the end, with ``openssl verify``;
tests/integration/test_mosquitto_security.py shows mosquitto accepting them.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store

import agent
from agent.cli.main import main

Capture = pytest.CaptureFixture[str]


def certs(*args: str) -> int:
    return main(["certs", *args])


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    d = tmp_path / "pki"
    assert certs("init", "--dir", str(d)) == 0
    return d


def test_init_writes_a_ca_with_a_private_key(pki: Path) -> None:
    ca = load(pki / "ca.pem")
    assert mode(pki / "ca.key") == 0o600
    assert mode(pki / "ca.pem") == 0o644
    bc = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign and ku.crl_sign
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
    assert ca.public_key().curve.name == "secp256r1"
    assert ca.signature_hash_algorithm is not None
    assert ca.signature_hash_algorithm.name == "sha256"
    assert (ca.not_valid_after_utc - ca.not_valid_before_utc).days >= 3650


def test_server_certificate_names_and_chain(pki: Path) -> None:
    args = ["--dir", str(pki), "--host", "broker.example", "--host", "mqtt.plant", "--ip"]
    assert certs("server", *args, "192.0.2.10", "--ip", "127.0.0.1") == 0
    cert = load(pki / "server.pem")
    assert mode(pki / "server.key") == 0o600
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["broker.example", "mqtt.plant"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("192.0.2.10"),
        ipaddress.ip_address("127.0.0.1"),
    ]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    policy = PolicyBuilder().store(Store([load(pki / "ca.pem")]))
    for name in (x509.DNSName("mqtt.plant"), x509.IPAddress(ipaddress.ip_address("192.0.2.10"))):
        chain = policy.build_server_verifier(name).verify(cert, [])
        assert chain[-1] == load(pki / "ca.pem")
    with pytest.raises(x509.verification.VerificationError):
        policy.build_server_verifier(x509.DNSName("other.example")).verify(cert, [])


def test_a_gateway_certificate_carries_its_broker_identity(pki: Path, capsys: Capture) -> None:
    assert certs("client", "--dir", str(pki), "--site", "plant-a", "--name", "gw-01") == 0
    out = capsys.readouterr().out
    cert = load(pki / "plant-a.gw-01.pem")
    assert mode(pki / "plant-a.gw-01.key") == 0o600
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    assert [a.value for a in cn] == ["plant-a/gw-01"]  # the ACL's %u
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    cert.verify_directly_issued_by(load(pki / "ca.pem"))
    assert "'plant-a/gw-01'" in out and "mqtt.key" in out


def test_a_service_certificate_is_named_as_given(pki: Path) -> None:
    assert certs("client", "--dir", str(pki), "--name", "bridge") == 0
    cert = load(pki / "bridge.pem")
    assert cert.subject.rfc4514_string() == "CN=bridge"
    assert mode(pki / "bridge.key") == 0o600


def test_nothing_is_overwritten_without_force(pki: Path, capsys: Capture) -> None:
    before = (pki / "ca.key").read_bytes(), (pki / "ca.pem").read_bytes()
    capsys.readouterr()
    assert certs("init", "--dir", str(pki)) == 2
    err = capsys.readouterr().err
    assert "already exist" in err and "--force" in err
    assert ((pki / "ca.key").read_bytes(), (pki / "ca.pem").read_bytes()) == before

    assert certs("client", "--dir", str(pki), "--name", "bridge") == 0
    first = (pki / "bridge.pem").read_bytes()
    assert certs("client", "--dir", str(pki), "--name", "bridge") == 2
    assert (pki / "bridge.pem").read_bytes() == first

    (pki / "bridge.key").chmod(0o644)  # someone loosened it; a replacement is 0600 again
    assert certs("client", "--dir", str(pki), "--name", "bridge", "--force") == 0
    assert (pki / "bridge.pem").read_bytes() != first
    assert mode(pki / "bridge.key") == 0o600


def test_keys_are_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        assert certs("init", "--dir", str(tmp_path / "d")) == 0
    finally:
        os.umask(old)
    assert mode(tmp_path / "d" / "ca.key") == 0o600


@pytest.mark.parametrize(
    ("with_ca", "args", "message"),
    [
        (False, ["client", "--name", "gw-01"], "certs init --dir"),
        (True, ["server"], "--host"),
        (True, ["server", "--ip", "not-an-ip"], "--ip 'not-an-ip'"),
        (True, ["client", "--name", "GW 01"], "--name 'GW 01'"),
        (True, ["client", "--site", "Plant/A", "--name", "gw-01"], "--site 'Plant/A'"),
        # `$` in a Python regex matches before a trailing newline: the id must not.
        (True, ["client", "--site", "plant-a\n", "--name", "gw-01"], "--site 'plant-a\n'"),
        (True, ["client", "--name", "bridge\n"], "--name 'bridge\n'"),
        (False, ["init", "--days", "0"], "--days 0"),
        (True, ["client", "--name", "bridge", "--days", "99999"], "--days 99999"),
    ],
)
def test_bad_input_exits_2_with_the_fix(
    tmp_path: Path, capsys: Capture, with_ca: bool, args: list[str], message: str
) -> None:
    if with_ca:
        assert certs("init", "--dir", str(tmp_path)) == 0
    assert certs(*args, "--dir", str(tmp_path)) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert "Traceback" not in err


def test_a_leaf_may_not_outlive_its_ca(tmp_path: Path, capsys: Capture) -> None:
    assert certs("init", "--dir", str(tmp_path), "--days", "30") == 0
    assert certs("server", "--dir", str(tmp_path), "--host", "b", "--days", "31") == 2
    assert "outlives the CA" in capsys.readouterr().err
    assert not (tmp_path / "server.key").exists()


def test_a_key_that_is_not_the_cas_is_refused(tmp_path: Path, capsys: Capture) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    assert certs("init", "--dir", str(a)) == 0
    assert certs("init", "--dir", str(b)) == 0
    shutil.copy2(b / "ca.key", a / "ca.key")
    assert certs("client", "--dir", str(a), "--name", "bridge") == 2
    assert "does not belong to" in capsys.readouterr().err


def test_without_cryptography_it_says_how_to_install_it(
    tmp_path: Path, capsys: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "cryptography", None)  # makes `import cryptography` fail
    monkeypatch.delitem(sys.modules, "agent.pki", raising=False)
    monkeypatch.delattr(agent, "pki", raising=False)
    assert certs("init", "--dir", str(tmp_path)) == 2
    err = capsys.readouterr().err
    assert "pip install 'energy-agent[certs]'" in err and "Traceback" not in err
    assert not list(tmp_path.iterdir())


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_openssl_verifies_each_purpose(pki: Path) -> None:
    assert certs("server", "--dir", str(pki), "--host", "broker.example") == 0
    assert certs("client", "--dir", str(pki), "--site", "plant-a", "--name", "gw-01") == 0

    def verify(purpose: str, cert: str) -> subprocess.CompletedProcess[str]:
        args = ["openssl", "verify", "-CAfile", str(pki / "ca.pem"), "-purpose", purpose]
        return subprocess.run(
            [*args, str(pki / cert)], capture_output=True, text=True, timeout=30, check=False
        )

    assert verify("sslserver", "server.pem").returncode == 0
    assert verify("sslclient", "plant-a.gw-01.pem").returncode == 0
    # Each is good for its own purpose only.
    assert verify("sslclient", "server.pem").returncode != 0
    assert verify("sslserver", "plant-a.gw-01.pem").returncode != 0
