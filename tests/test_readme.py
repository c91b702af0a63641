"""The README's "A strategy in Python" runs as written right after the README's first
set-up command: it is run in a fresh interpreter in which every package that command does
not install (the optional extras of pyproject.toml) cannot be imported."""
from __future__ import annotations

import pathlib
import re
import subprocess
import sys
import textwrap

import pytest

import fastfeed

ROOT = pathlib.Path(fastfeed.__file__).parent.parent
README = ROOT / "README.md"
if not README.exists():  # pragma: no cover - an installed wheel, no sources
    pytest.skip("needs the source tree", allow_module_level=True)

#: the README block sleeps this long on the live feed; the test listens for less
README_SLEEP = "await asyncio.sleep(5)"


def _section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start: end if end > 0 else None]


def _first_setup_extras() -> set[str]:
    """The extras the README's first set-up command installs (``-e .`` -> none)."""
    first = re.search(r"```bash\n(.*?)```", _section("Set-up"), re.S).group(1)
    m = re.search(r"pip install[^\n&]*?-e\s+['\"]?\.(?:\[([\w,]+)\])?", first)
    assert m, f"the first set-up command installs fastfeed from the checkout: {first!r}"
    return set(filter(None, (m.group(1) or "").split(",")))


def _modules_not_installed(extras: set[str]) -> set[str]:
    """Import names of every optional dependency outside ``extras``."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = {re.split(r"[<>=!~\[; ]", d)[0].lower() for d in project["dependencies"]}
    names = set()
    for extra, reqs in project["optional-dependencies"].items():
        if extra in extras:
            continue
        for req in reqs:
            name = re.split(r"[<>=!~\[; ]", req)[0].lower()
            if name not in runtime:
                names.add(name.replace("-", "_"))
    return names


BLOCKER = textwrap.dedent('''\
    import importlib.abc, sys
    BLOCKED = set(sys.argv[1].split(","))
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0].lower() in BLOCKED:
                raise ModuleNotFoundError(f"{name} is not installed by the first set-up command")
    sys.meta_path.insert(0, Block())
    sys.argv = ["readme"]
''')


def test_strategy_example_runs_after_the_first_setup_command():
    blocks = re.findall(r"```python\n(.*?)```", _section("A strategy in Python"), re.S)
    assert len(blocks) == 1
    code = blocks[0]
    assert code.count(README_SLEEP) == 1
    code = code.replace(README_SLEEP, "await asyncio.sleep(1.5)")
    blocked = _modules_not_installed(_first_setup_extras())
    assert "pandas" in blocked  # the first command installs no extra
    out = subprocess.run([sys.executable, "-c", BLOCKER + code, ",".join(sorted(blocked))],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    leaders = [line for line in lines if " close " in line and " vwap " in line and " volume " in line]
    assert len(leaders) == 5, out.stdout
    assert lines[-1].startswith("{") and "p99" in lines[-1], out.stdout  # the latency percentiles
