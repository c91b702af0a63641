import pytest

from fastfeed.simulator.testing import SimThread


@pytest.fixture(scope="module")
def sim():
    """A simulator in a background thread: 300 tickers, all trading, 20x time compression."""
    with SimThread(n_tickers=300, trade_fraction=1.0, speed=20.0, bars_per_frame=50) as s:
        yield s
