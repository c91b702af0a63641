"""The format is real for C: a C program compiled here reads a live segment's 60 s VWAP."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from fastfeed.share import attach

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")


@pytest.fixture(scope="module")
def c_reader(tmp_path_factory):
    exe = str(tmp_path_factory.mktemp("c") / "c_reader")
    subprocess.run(["gcc", "-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-I", os.path.join(ROOT, "ext"),
                    os.path.join(HERE, "c_reader.c"), "-o", exe], check=True)
    return exe


def test_c_reader_prints_the_python_readers_vwap(shm_name, procs, c_reader):
    w = procs("writer", shm_name, "--batches", "300", "--seed", "5")
    w.expect("done")
    r = attach(shm_name, timeout=5)
    f = r.window(60, copy=True)
    checked = 0
    for row in (0, 17, 499):
        sym = f.symbols[row]
        out = subprocess.run([c_reader, shm_name, sym, "60"], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        name, window, vwap, count, T, gen = out.stdout.split()
        assert (name, int(window)) == (sym, 60)
        assert float(vwap) == f.vwap[row] and int(count) == f.count[row]  # %.17g round-trips a double
        assert int(T) == f.as_of and int(gen) == f.generation
        checked += 1
    assert checked == 3
    bad = subprocess.run([c_reader, shm_name, "NOPE", "60"], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 3 and "no symbol NOPE" in bad.stderr
    r.close()
