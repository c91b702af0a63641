import logging

import fastfeed.log as logmod


def test_rate_limited_log_says_how_many_it_held(caplog, monkeypatch):
    t = [100.0]
    monkeypatch.setattr(logmod.time, "monotonic", lambda: t[0])
    rl = logmod.RateLimitedLog(logging.getLogger("fastfeed.feeds"), interval=1.0)
    with caplog.at_level(logging.WARNING, logger="fastfeed.feeds"):
        assert rl("k", "bad %s", "x")
        assert not rl("k", "bad %s", "y") and not rl("k", "bad %s", "z")
        assert rl("other", "other kind")
        t[0] += 1.5
        assert rl("k", "bad %s", "w")
    msgs = [r.getMessage() for r in caplog.records]
    assert msgs == ["bad x", "other kind", "bad w (2 more like this since the last line)"]
