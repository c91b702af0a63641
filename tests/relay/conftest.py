"""Fixtures of the relay tests: the real nats-server (JetStream, temp store, loopback)."""
from __future__ import annotations

import pytest

from fastfeed.relay.natsserver import NatsServer


@pytest.fixture
def nats_server():
    """A fresh ``nats-server -js`` on a free loopback port; ``restart()`` keeps port and
    store; killed (and its store removed) at teardown."""
    srv = NatsServer()
    srv.start()
    try:
        yield srv
    finally:
        srv.close()


@pytest.fixture
def make_nats_server():
    """Factory for servers with a configuration (auth, no JetStream); all closed at teardown."""
    made: list[NatsServer] = []

    def make(**kw) -> NatsServer:
        srv = NatsServer(**kw)
        made.append(srv)
        return srv.start()

    yield make
    for srv in made:
        srv.close()
