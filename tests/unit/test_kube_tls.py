"""Kube.send's own connections verify the API server as the kubernetes client has urllib3 verify it: against a TLS
stand-in server with certificates made here (the test API server speaks plain HTTP), the CA of the kubeconfig
(else nothing but the system's CAs), the server's name, `verify_ssl` off as kubeconfig's insecure-skip-tls-verify,
and the client's own certificate where the server asks for one."""
from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from kubernetes.client import ApiClient, Configuration

from robin.kube.client import Kube, KubeError
from tests.support.http_standin import read_request

ANSWER = b'{"kind": "Event", "metadata": {"name": "e1"}}'


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca(directory, name: str):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(_name(name)).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    path = directory / f"{name}.crt"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key, str(path)


def issue(directory, ca, name: str, sans: list, usage) -> tuple[str, str]:
    """(certificate file, key file) of `name` signed by `ca`."""
    ca_cert, ca_key, _ = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


class TlsStandIn:
    """An HTTPS server on 127.0.0.1 answering every request with ANSWER; `requests` holds the request lines it got
    (so a refused handshake shows as none), `client_subjects` the certificates clients presented."""

    def __init__(self, cert: tuple[str, str], client_ca: str | None = None):
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(*cert)
        if client_ca:
            self.context.verify_mode = ssl.CERT_REQUIRED
            self.context.load_verify_locations(client_ca)
        self.requests: list[str] = []
        self.client_subjects: list = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        try:
            with self.context.wrap_socket(sock, server_side=True) as tls:
                peer = tls.getpeercert()
                if peer:
                    self.client_subjects.append(peer["subject"])
                reader = tls.makefile("rb")
                while request_line := read_request(reader):
                    self.requests.append(request_line.decode().strip())
                    tls.sendall(b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
                                b"Content-Length: %d\r\n\r\n" % len(ANSWER) + ANSWER)
        except (OSError, ssl.SSLError):
            pass  # a refused handshake: the client saw it fail

    def close(self) -> None:
        self._listener.close()


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    directory = tmp_path_factory.mktemp("pki")
    ca, rogue = make_ca(directory, "cluster-ca"), make_ca(directory, "rogue-ca")
    server_sans = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
    return {"ca": ca[2], "rogue_ca": rogue[2],
            "server": issue(directory, ca, "apiserver", server_sans, ExtendedKeyUsageOID.SERVER_AUTH),
            "elsewhere": issue(directory, ca, "elsewhere", [x509.DNSName("other.example")],
                               ExtendedKeyUsageOID.SERVER_AUTH),
            "client": issue(directory, ca, "robin-provisioner", [x509.DNSName("robin-provisioner")],
                            ExtendedKeyUsageOID.CLIENT_AUTH)}


@pytest.fixture
def servers():
    started = []

    def start(*args, **kwargs) -> TlsStandIn:
        started.append(TlsStandIn(*args, **kwargs))
        return started[-1]

    yield start
    for server in started:
        server.close()


def kube_for(server: TlsStandIn, **settings) -> Kube:
    configuration = Configuration(host=f"https://127.0.0.1:{server.port}")
    configuration.api_key = {"BearerToken": "Bearer t"}
    for name, value in settings.items():
        setattr(configuration, name, value)
    kube = Kube(ApiClient(configuration), qps=100, burst=100)
    assert kube._direct is not None  # on its own connections, not urllib3's
    return kube


def create_event(kube: Kube) -> dict:
    return kube.create_event("default", {"metadata": {"name": "e1"}})


def test_the_api_server_is_verified_against_the_kubeconfig_ca(pki, servers):
    server = servers(pki["server"])
    kube = kube_for(server, ssl_ca_cert=pki["ca"])
    try:
        assert create_event(kube) == {"kind": "Event", "metadata": {"name": "e1"}}
        assert create_event(kube)["metadata"]["name"] == "e1"
        assert server.requests == ["POST /api/v1/namespaces/default/events HTTP/1.1"] * 2
    finally:
        kube.close()


@pytest.mark.parametrize("certificate, ca", [("server", "rogue_ca"), ("elsewhere", "ca")],
                         ids=["signed-by-another-ca", "for-another-name"])
def test_a_server_that_is_not_the_api_server_gets_no_request(pki, servers, certificate, ca):
    server = servers(pki[certificate])
    kube = kube_for(server, ssl_ca_cert=pki[ca])
    try:
        with pytest.raises(KubeError) as failed:
            create_event(kube)
        assert failed.value.status == 0 and "CERTIFICATE_VERIFY_FAILED" in failed.value.message
        assert server.requests == []  # nothing was sent, the token least of all
    finally:
        kube.close()


def test_the_system_cas_alone_do_not_trust_a_private_ca(pki, servers):
    server = servers(pki["server"])
    kube = kube_for(server)
    try:
        with pytest.raises(KubeError) as failed:
            create_event(kube)
        assert "CERTIFICATE_VERIFY_FAILED" in failed.value.message and server.requests == []
    finally:
        kube.close()


def test_verify_ssl_off_skips_the_check_as_insecure_skip_tls_verify(pki, servers):
    server = servers(pki["elsewhere"])
    kube = kube_for(server, ssl_ca_cert=pki["rogue_ca"], verify_ssl=False)
    try:
        assert create_event(kube)["metadata"]["name"] == "e1"
    finally:
        kube.close()


def test_the_client_certificate_is_presented(pki, servers):
    server = servers(pki["server"], client_ca=pki["ca"])
    cert_file, key_file = pki["client"]
    kube = kube_for(server, ssl_ca_cert=pki["ca"], cert_file=cert_file, key_file=key_file)
    try:
        assert create_event(kube)["metadata"]["name"] == "e1"
        assert server.client_subjects == [((("commonName", "robin-provisioner"),),)]
    finally:
        kube.close()
    without = kube_for(server, ssl_ca_cert=pki["ca"])
    try:
        with pytest.raises(KubeError) as failed:
            create_event(without)
        assert failed.value.status == 0
        assert len(server.requests) == 1  # only the one with the certificate
    finally:
        without.close()
