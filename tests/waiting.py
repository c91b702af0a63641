"""Shared test helper (no tests here): wait on a condition, never on a fixed sleep."""
from __future__ import annotations

import asyncio
from typing import Callable


async def until(pred: Callable[[], bool], timeout: float = 60.0) -> None:
    """Return once ``pred()`` holds (polled every 10 ms on the running loop); AssertionError
    after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        if loop.time() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)
