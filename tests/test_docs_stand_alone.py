"""What the project ships stands alone: every file it cites is in the repository (no
design or protocol notes kept elsewhere, no stale test paths, no issue numbers of a
tracker the reader does not have), and recordings have one file extension everywhere."""
from __future__ import annotations

import pathlib
import re

import pytest

import fastfeed

ROOT = pathlib.Path(fastfeed.__file__).parent.parent
if not (ROOT / "pyproject.toml").exists():  # pragma: no cover - an installed wheel, no sources
    pytest.skip("needs the source tree", allow_module_level=True)

#: what the project ships: code, stubs, tests, benches, docs, build files
SHIPPED_DIRS = ("fastfeed", "ext", "tests", "benches", "docs", ".ci")
SHIPPED_FILES = ("README.md", "pyproject.toml", "setup.py", "MANIFEST.in", ".gitignore")
TEXT_SUFFIXES = {".py", ".pyx", ".pxd", ".pyi", ".md", ".toml", ".cfg", ".txt", ".sh", ""}

#: a cited file: a path or a name ending in a source/doc suffix
CITED = re.compile(r"(?<![\w./-])(?!self\.)((?:[\w.-]+/)*[\w-][\w.-]*\.(?:md|py|pyx|pxd|pyi|toml|cfg|sh))\b")
#: "issue #3", "(issue 10)": a tracker the reader of the repository does not have
ISSUE = re.compile(r"\bissues? #?\d+", re.IGNORECASE)
#: a recording's file name: day.ffr (never .ffrec or another spelling)
RECORDING_NAME = re.compile(r"\.ff(r\w+|[a-qs-z]\w*)\b")
#: files a test writes itself
WRITTEN_BY_TESTS = {"ff_user_strategy.pyx", "example.py"}


def _shipped() -> list[pathlib.Path]:
    out = [ROOT / f for f in SHIPPED_FILES if (ROOT / f).exists()]
    for d in SHIPPED_DIRS:
        out += [p for p in sorted((ROOT / d).rglob("*"))
                if p.is_file() and p.suffix in TEXT_SUFFIXES and "__pycache__" not in p.parts
                and not p.name.endswith((".c", ".so"))]
    return out


def _all_paths() -> tuple[set[str], set[str]]:
    rel = {p.relative_to(ROOT).as_posix() for d in SHIPPED_DIRS if (ROOT / d).exists()
           for p in (ROOT / d).rglob("*") if p.is_file()}
    rel |= {f for f in SHIPPED_FILES if (ROOT / f).exists()}
    return rel, {r.rsplit("/", 1)[-1] for r in rel}


def _lines(path: pathlib.Path):
    for i, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        yield f"{path.relative_to(ROOT)}:{i}", line


def test_every_cited_file_is_in_the_repository():
    rel, names = _all_paths()
    missing = []
    for path in _shipped():
        for where, line in _lines(path):
            for cited in CITED.findall(line):
                if cited in WRITTEN_BY_TESTS:
                    continue
                if "/" in cited:
                    ok = (cited in rel or (path.parent / cited).exists()
                          or any(r.endswith("/" + cited) for r in rel))
                else:
                    ok = cited in names
                if not ok:
                    missing.append(f"{where}: {cited}")
    assert not missing, "cited but not in the repository:\n" + "\n".join(missing)


def test_no_issue_numbers():
    found = [f"{where}: {line.strip()}" for path in _shipped() if path.name != "test_docs_stand_alone.py"
             for where, line in _lines(path) if ISSUE.search(line)]
    assert not found, "cites an issue tracker:\n" + "\n".join(found)


def test_recordings_have_one_extension():
    found = [f"{where}: {line.strip()}" for path in _shipped() if path.name != "test_docs_stand_alone.py"
             for where, line in _lines(path) if RECORDING_NAME.search(line)]
    assert not found, "a recording named other than *.ffr:\n" + "\n".join(found)
