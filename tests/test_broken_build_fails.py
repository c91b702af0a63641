"""A broken build fails: without the compiled engine, every benchmark suite and every
feed test errors at collection instead of falling back to a stand-in engine and passing."""
from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

import fastfeed

ROOT = pathlib.Path(fastfeed.__file__).parent.parent
if not (ROOT / "benches").is_dir():  # pragma: no cover - an installed wheel, no sources
    pytest.skip("needs the source tree", allow_module_level=True)

WITHOUT_ENGINE = (
    "import sys; sys.modules['fastfeed._ext.engine'] = None; import pytest; "
    "sys.exit(pytest.main(['--collect-only', '-q', '-p', 'no:cacheprovider', 'benches', 'tests/feeds']))"
)


def test_benches_and_feed_tests_do_not_run_without_the_compiled_engine():
    out = subprocess.run([sys.executable, "-c", WITHOUT_ENGINE], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode != 0, out.stdout
    # bench_relay measures separate processes (fastfeed relay, consumers) and imports no
    # engine in the test process: there is no stand-in it could fall back to
    suites = sorted(p.relative_to(ROOT).as_posix() for d in ("benches", "tests/feeds")
                    for p in (ROOT / d).glob("*.py")
                    if p.name.startswith(("bench_", "test_")) and p.name != "bench_relay.py")
    assert len(suites) >= 8
    not_failing = [s for s in suites if f"ImportError while importing test module '{ROOT / s}'" not in out.stdout]
    assert not not_failing, out.stdout[-3000:]
