"""NATS URLs, credentials from the URL or the environment, and masking."""
from __future__ import annotations

import pytest

from fastfeed.relay.config import NatsConfig, is_nats_url, mask_nats_url
from fastfeed.errors import RelayConfigError


def test_plain_url_defaults_port():
    c = NatsConfig.from_url("nats://10.0.0.5", env={})
    assert c.servers == ("nats://10.0.0.5:4222",)
    assert c.connect_options() == {"servers": ["nats://10.0.0.5:4222"]}
    assert c.display_url == "nats://10.0.0.5:4222"


def test_user_password_in_url_are_used_and_never_shown():
    c = NatsConfig.from_url("nats://alice:s%40cret@h1:4223,h2", env={})
    kw = c.connect_options()
    assert kw["user"] == "alice" and kw["password"] == "s@cret"
    assert kw["servers"] == ["nats://h1:4223", "nats://h2:4222"]
    for text in (c.display_url, repr(c), str(c)):
        assert "s@cret" not in text and "alice" not in text
    assert c.mask("auth failed for s@cret at nats://alice:s@cret@h1") == "auth failed for *** at nats://***@h1"


def test_token_in_url():
    c = NatsConfig.from_url("tls://t0ken-123@h:4222", env={})
    assert c.connect_options()["token"] == "t0ken-123"
    assert c.tls_required and c.display_url == "tls://***@h:4222"
    assert "t0ken" not in repr(c)


def test_environment_fills_what_the_url_lacks(tmp_path):
    creds = tmp_path / "u.creds"
    creds.write_text("-----BEGIN NATS USER JWT-----\n")
    env = {"FASTFEED_NATS_USER": "bob", "FASTFEED_NATS_PASSWORD": "pw", "FASTFEED_NATS_CREDS": str(creds)}
    c = NatsConfig.from_url("nats://h", env=env)
    kw = c.connect_options()
    assert (kw["user"], kw["password"], kw["user_credentials"]) == ("bob", "pw", str(creds))
    # the URL wins over the environment
    c2 = NatsConfig.from_url("nats://tok@h", env=env)
    assert c2.token == "tok" and c2.user is None
    env_tok = {"FASTFEED_NATS_TOKEN": "secret-token"}
    assert NatsConfig.from_url("nats://h", env=env_tok).connect_options()["token"] == "secret-token"


def test_file_options_and_errors(tmp_path):
    seed = tmp_path / "seed.nk"
    seed.write_text("SUAxxx\n")
    c = NatsConfig.from_url(f"nats://h?nkey={seed}", env={})
    assert c.connect_options()["nkeys_seed"] == str(seed)
    with pytest.raises(RelayConfigError, match="not found"):
        NatsConfig.from_url("nats://h?creds=/nonexistent/x.creds", env={})
    with pytest.raises(RelayConfigError, match="unknown option"):
        NatsConfig.from_url("nats://h?password=x", env={})
    with pytest.raises(RelayConfigError, match="bad port"):
        NatsConfig.from_url("nats://u:pw@h:notaport", env={})
    with pytest.raises(RelayConfigError) as e:
        NatsConfig.from_url("ws://u:hunter2@h", env={})
    assert "hunter2" not in str(e.value)


def test_is_nats_url_and_mask():
    assert is_nats_url("nats://h:4222") and is_nats_url("TLS://h")
    assert not is_nats_url("ws://h/v1/stocks") and not is_nats_url(None)
    assert mask_nats_url("see nats://a:b@h and tls://tok@h2") == "see nats://***@h and tls://***@h2"
