"""NATS credentials (token, nkey seed file) and TLS, against the real nats-server."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from fastfeed.errors import NatsAuthError, RelayError
from fastfeed.relay.publisher import RelayPublisher

pytestmark = pytest.mark.timeout(120)


def works(url: str, **kw) -> bool:
    pub = RelayPublisher(url, "vantafin", connect_timeout=5, heartbeat=0, **kw).start()
    try:
        return pub.connected
    finally:
        pub.stop(2)


def test_token_from_the_url_or_the_environment(make_nats_server, monkeypatch):
    srv = make_nats_server(config='authorization { token: "tok-9f2c" }')
    assert works(srv.url.replace("nats://", "nats://tok-9f2c@"))
    monkeypatch.setenv("FASTFEED_NATS_TOKEN", "tok-9f2c")
    assert works(srv.url)
    with pytest.raises(NatsAuthError) as e:
        works(srv.url.replace("nats://", "nats://tok-wrong@"))
    assert "tok-wrong" not in str(e.value)


def _nkey_seed(path) -> str:
    """Write a new user nkey seed to ``path``; return its public key."""
    import nkeys

    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    path.write_bytes(seed)
    return nkeys.from_seed(bytearray(seed)).public_key.decode()


def test_nkey_seed_file(make_nats_server, tmp_path, monkeypatch):
    good, other = tmp_path / "user.nk", tmp_path / "other.nk"
    public = _nkey_seed(good)
    _nkey_seed(other)
    srv = make_nats_server(config=f'authorization {{ users = [ {{ nkey: "{public}" }} ] }}')
    assert works(f"{srv.url}?nkey={good}")
    monkeypatch.setenv("FASTFEED_NATS_NKEY", str(good))
    assert works(srv.url)
    with pytest.raises(NatsAuthError):
        works(f"{srv.url}?nkey={other}")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a certificate")
def test_tls_with_a_ca_file_and_refused_without(make_nats_server, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    srv = make_nats_server(config=f'tls {{ cert_file: "{cert}", key_file: "{key}" }}')
    url = srv.url.replace("nats://", "tls://")
    assert works(f"{url}?ca={cert}")
    import ssl

    ctx = ssl.create_default_context(cafile=str(cert))
    assert works(url, ssl_context=ctx)  # a context passed through as is
    with pytest.raises(RelayError):  # the server's certificate is not trusted
        works(url)
