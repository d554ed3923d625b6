"""Deployment credentials (common/certificates.py, `privrec certs`)."""

from __future__ import annotations

import ipaddress
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from typer.testing import CliRunner

from common.certificates import CertificateError, Credentials, make_credentials, make_node_key
from common.cli import app


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_when_credentials_made_then_the_ca_signs_a_superlink_certificate_for_the_hosts(tmp_path):
    make_credentials(tmp_path, hosts=["127.0.0.1", "Fl.Example.org"], nodes=["node-1", "node-2"])
    creds = Credentials(tmp_path)
    ca = x509.load_pem_x509_certificate(creds.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(creds.superlink_cert.read_bytes())
    server.verify_directly_issued_by(ca)
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert sans.get_values_for_type(x509.DNSName) == ["fl.example.org"]
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    key = serialization.load_pem_private_key(creds.superlink_key.read_bytes(), None)
    assert key.public_key().public_numbers() == server.public_key().public_numbers()
    for secret in (creds.ca_key, creds.superlink_key, creds.node_key("node-1"), creds.node_key("node-2")):
        assert _mode(secret) == 0o600
    assert not list(tmp_path.rglob("*.tmp"))


def test_when_node_key_made_then_flower_reads_it_as_a_p384_pair(tmp_path):
    make_node_key(tmp_path / "node-a")
    private = serialization.load_ssh_private_key((tmp_path / "node-a").read_bytes(), None)
    public = serialization.load_ssh_public_key((tmp_path / "node-a.pub").read_bytes())
    assert isinstance(private.curve, ec.SECP384R1) and isinstance(public, ec.EllipticCurvePublicKey)
    assert private.public_key().public_numbers() == public.public_numbers()
    from flwr.cli.supernode.register import try_load_public_key

    assert try_load_public_key(tmp_path / "node-a.pub")  # the exact check `flwr supernode register` runs


def test_when_credentials_exist_then_nothing_is_overwritten_without_force(tmp_path):
    make_credentials(tmp_path, hosts=["localhost"], nodes=["n1"])
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(CertificateError, match="already exists; pass --force"):
        make_credentials(tmp_path, hosts=["localhost"], nodes=["n1", "n2"])
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before  # not even n2
    with pytest.raises(CertificateError, match="already exists; pass --force"):
        make_node_key(Credentials(tmp_path).node_key("n1"))
    make_credentials(tmp_path, hosts=["localhost"], nodes=["n1"], force=True)
    assert Credentials(tmp_path).ca_cert.read_bytes() != before[Credentials(tmp_path).ca_cert]


@pytest.mark.parametrize("hosts, nodes, message", [
    ([], [], "no host given"),
    (["bad host!"], [], "neither an IP address nor a DNS name"),
    (["localhost"], ["a/b"], "node name 'a/b'"),
    (["localhost"], ["n", "n"], "node names repeat"),
])
def test_when_asked_for_bad_credentials_then_a_clear_error_and_no_files(tmp_path, hosts, nodes, message):
    with pytest.raises(CertificateError, match=message):
        make_credentials(tmp_path / "out", hosts=hosts, nodes=nodes)
    assert not (tmp_path / "out").exists()


def test_when_certs_command_runs_twice_then_the_second_fails_in_one_line(tmp_path):
    runner = CliRunner()
    first = runner.invoke(app, ["certs", str(tmp_path), "--host", "127.0.0.1", "--nodes", "3"])
    assert first.exit_code == 0, first.output
    assert sorted(p.name for p in (tmp_path / "nodes").iterdir()) == [
        "node-1", "node-1.pub", "node-2", "node-2.pub", "node-3", "node-3.pub"]
    second = runner.invoke(app, ["certs", str(tmp_path), "--host", "127.0.0.1"])
    assert second.exit_code == 2
    assert "already exists; pass --force" in second.output and len(second.output.strip().splitlines()) == 1
