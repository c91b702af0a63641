"""fastfeed: whole-market live per-second bars rolled into OHLCV/VWAP windows."""
__version__ = "0.1.0"
