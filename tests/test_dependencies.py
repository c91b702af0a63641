"""The declared dependency ranges are the tested ones: pyproject.toml's lower bounds are the
pins of .ci/lower-bounds.txt (the suite's oldest-release run), no runtime dependency has an
upper bound it was not tested against, and the installed releases satisfy the ranges."""
from __future__ import annotations

import pathlib
import re
from importlib.metadata import version

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

import fastfeed

ROOT = pathlib.Path(fastfeed.__file__).parent.parent
if not (ROOT / "pyproject.toml").exists():  # pragma: no cover - an installed wheel, no sources
    pytest.skip("needs the source tree", allow_module_level=True)


def _project() -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _tested() -> list[Requirement]:
    p = _project()
    return [Requirement(r) for r in (*p["dependencies"], *p["optional-dependencies"]["test"])]


def _pins() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / ".ci" / "lower-bounds.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, v = line.partition("==")
            pins[name.strip().lower()] = Version(v)
    return pins


def _lower_bound(req: Requirement) -> Version:
    (bound,) = [s for s in req.specifier if s.operator in (">=", "==")]
    return Version(bound.version)


def test_every_lower_bound_is_the_tested_pin():
    pins = _pins()
    for req in _tested():
        assert req.name.lower() in pins, f"{req.name}: no tested oldest release in .ci/lower-bounds.txt"
        assert _lower_bound(req) == pins[req.name.lower()], req


def test_runtime_dependencies_have_no_untested_upper_bound():
    for req in map(Requirement, _project()["dependencies"]):
        ops = {s.operator for s in req.specifier}
        assert ops in ({">="}, {"=="}), req  # == only where the build requires it (picows' C layout)


def test_installed_releases_are_in_the_declared_ranges():
    for req in _tested():
        assert req.specifier.contains(version(req.name), prereleases=True), (req, version(req.name))
