"""The package layout's rules, checked on the source: dependencies point one way, no
package imports another's private names, no import cycles, ``import fastfeed`` is light."""
from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import fastfeed

ROOT = pathlib.Path(fastfeed.__file__).parent

#: package (or top-level module) -> the fastfeed packages it may import, lazily or not
ALLOWED = {
    "errors": set(),
    "log": set(),
    "engine": {"_ext", "errors"},
    "transport": {"_ext", "engine", "errors", "log"},
    "feeds": {"_ext", "engine", "errors", "log", "transport"},
    "snapshot": {"engine"},
    "strategy": {"_ext", "engine", "log"},
    "feed": {"engine", "errors", "feeds", "recording", "relay", "share", "snapshot", "strategy", "transport"},
    "recording": {"_ext", "engine", "errors", "feed", "feeds", "snapshot", "transport"},
    "simulator": {"_ext", "errors", "feeds", "transport"},
    "bench": {"engine", "errors", "feed", "feeds", "simulator", "transport"},
    "share": {"_ext", "engine", "errors", "feeds", "recording", "snapshot"},
    "cli": {"bench", "engine", "errors", "feed", "feeds", "recording", "relay", "share", "simulator", "snapshot"},
    "relay": {"bench", "errors", "feed", "log", "simulator", "transport"},
}


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for p in ROOT.rglob("*.py"):
        parts = list(p.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = p
    return out


def _imports(name: str, path: pathlib.Path) -> list[tuple[str, list[str], bool]]:
    """(imported module, names, at module level) of every fastfeed import in ``path``."""
    tree = ast.parse(path.read_text())
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    top = {id(n) for n in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.startswith("fastfeed"):
                out.append((mod, [a.name for a in node.names], id(node) in top))
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("fastfeed"):
                    out.append((a.name, [], id(node) in top))
    return out


def _area(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_dependencies_point_one_way_and_no_private_names_cross_packages():
    problems = []
    for name, path in _modules().items():
        area = _area(name)
        if area in ("", "_ext"):
            continue
        if area not in ALLOWED:
            problems.append(f"{name}: fastfeed/{area} has no entry in ALLOWED (the packages it may use)")
            continue
        for mod, names, _ in _imports(name, path):
            if mod.endswith("__main__") or "__main__" in names:
                problems.append(f"{name} imports the program {mod} (import the module it runs)")
            target = _area(mod)
            if target in ("", area):
                continue
            if target not in ALLOWED[area]:
                problems.append(f"{name} imports {mod} ({area} -> {target})")
            for n in names:
                if n.startswith("_") and target != "_ext":
                    problems.append(f"{name} imports the private {mod}.{n}")
    assert not problems, "\n".join(problems)


def test_no_import_cycles_at_import_time():
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        for mod, names, top in _imports(name, path):
            if not top:
                continue
            for cand in [mod, *(f"{mod}.{n}" for n in names)]:
                # a module's own ancestors are already being imported when it runs
                if cand in graph and cand != name and not name.startswith(cand + "."):
                    graph[name].add(cand)
            # importing a.b.c runs a and a.b first
            parts = mod.split(".")
            for i in range(2, len(parts)):
                parent = ".".join(parts[:i])
                if parent in graph and parent != name and not name.startswith(parent + "."):
                    graph[name].add(parent)
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(d):] + [d]))
            if d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_import_fastfeed_loads_no_transport_recorder_or_atexit_hook():
    code = (
        "import atexit, sys\n"
        "n0 = atexit._ncallbacks()\n"
        "import fastfeed\n"
        "from fastfeed import Engine, Universe, AuthError\n"
        "heavy = sorted(m for m in sys.modules if m.startswith(('picows', 'fastfeed.transport',"
        " 'fastfeed.recording', 'fastfeed.feed', 'fastfeed._ext.listener')))\n"
        "print(heavy, atexit._ncallbacks() - n0)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "[] 0", r.stdout


def test_public_names_resolve():
    for name in fastfeed.__all__:
        assert getattr(fastfeed, name) is not None


def test_every_import_the_readme_and_docs_show_works():
    import re

    root = ROOT.parent
    lines = set()
    for doc in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        for line in doc.read_text().splitlines():
            m = re.match(r"\s*((?:from fastfeed[\w.]* import [\w, ]+)|(?:import fastfeed[\w.]*))\s*$", line)
            if m:
                lines.add(m.group(1))
    assert lines  # the docs do show imports
    for line in sorted(lines):
        exec(line, {})
