"""gRPC over mutual TLS: `vlm serve`'s options on a real tritonserver, the SDK and the CLI, with certificates
made here (a CA, a server certificate for 127.0.0.1, a client certificate). A client without a certificate,
or speaking plaintext, is refused; one with the CA's certificate is answered."""
from __future__ import annotations

import datetime
import ipaddress
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from minivlm.server.process import GrpcTls
from tests.integration.conftest import make_image
from tests.integration.server_fixture import running_server
from vlm_client import VLMClient, VLMError


def _issue(name: str, key, issuer_name: x509.Name, issuer_key, *, ca: bool, server: bool = False):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
               .issuer_name(issuer_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(folder: Path, name: str, cert, key) -> tuple[Path, Path]:
    cert_path, key_path = folder / f"{name}.pem", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


@pytest.fixture(scope="module")
def certificates(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("tls")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = _issue("test CA", ca_key, ca_name, ca_key, ca=True)
    files = {"ca": _write(folder, "ca", ca, ca_key)[0]}
    for name, server in (("server", True), ("client", False)):
        key = ec.generate_private_key(ec.SECP256R1())
        files[name], files[f"{name}_key"] = _write(folder, name, _issue(name, key, ca_name, ca_key, ca=False,
                                                                         server=server), key)
    return files


@pytest.fixture(scope="module")
def mtls_server(model_repository, certificates, tmp_path_factory):
    tls = GrpcTls(server_cert=certificates["server"], server_key=certificates["server_key"],
                  client_ca=certificates["ca"])
    with running_server(model_repository, log_dir=tmp_path_factory.mktemp("triton-tls"), grpc_tls=tls) as server:
        yield server


def test_a_client_with_the_cas_certificate_is_answered(mtls_server, certificates):
    with VLMClient(mtls_server.grpc_url, tls_ca=certificates["ca"], tls_cert=certificates["client"],
                   tls_key=certificates["client_key"], timeout_s=60) as client:
        assert client.ask(make_image(1), "[CAPTION]", max_new_tokens=2).task == "caption"


@pytest.mark.parametrize("how", ["plaintext", "no client certificate"])
def test_other_clients_are_refused(mtls_server, certificates, how):
    tls = {} if how == "plaintext" else {"tls_ca": certificates["ca"]}
    with VLMClient(mtls_server.grpc_url, timeout_s=10, retries=0, **tls) as client:
        with pytest.raises(VLMError):
            client.route("describe the picture")


def test_the_cli_speaks_mutual_tls(mtls_server, certificates):
    out = subprocess.run([sys.executable, "-m", "minivlm.cli", "route", "-u", mtls_server.grpc_url,
                          "--tls-ca", str(certificates["ca"]), "--tls-cert", str(certificates["client"]),
                          "--tls-key", str(certificates["client_key"]), "find all the cars"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\t")[0] == "od"


def test_the_server_command_line_asks_for_tls(certificates, tmp_path):
    tls = GrpcTls(server_cert=certificates["server"], server_key=certificates["server_key"])
    assert tls.flags()[:1] == ["--grpc-use-ssl=true"] and not any("mutual" in f for f in tls.flags())
    with pytest.raises(FileNotFoundError, match="nope.pem"):
        GrpcTls(server_cert=tmp_path / "nope.pem", server_key=certificates["server_key"])
