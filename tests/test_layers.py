"""The package's layering, read from the sources with ``ast`` (module-level and function-level
imports alike): no import cycle between longseq modules, and no import that goes up the layers
documented in README.md ("Layers"). Optional third-party dependencies are not longseq modules and
are not looked at."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "src" / "longseq"

# What each top-level part of longseq may import (besides itself). Lowest first; "" = the root
# package (longseq/__init__.py), which only the command line imports.
# papers: the BibTeX list of the implemented papers (stdlib only), readable from every layer
BASE = {"utils", "_discover", "_version", "papers"}
KERNELS = BASE | {"optim", "trees", "nn", "ssm", "ops"}
ALLOWED = {
    "utils": set(),
    "_discover": set(),
    "_version": set(),
    "papers": set(),
    "optim": BASE,
    "trees": BASE,
    "nn": BASE | {"optim"},
    "ops": BASE | {"optim", "nn"},
    "ssm": BASE | {"optim", "nn", "ops"},
    "mixers": KERNELS,
    "models": KERNELS | {"mixers"},
    "structured": KERNELS | {"models"},
    "operators": KERNELS | {"models", "tasks"},
    "tasks": BASE | {"trees"},
    "train": KERNELS | {"mixers", "models", "structured", "operators", "tasks"},
    "bench": KERNELS | {"mixers", "models", "structured", "operators"},
    "arena": KERNELS | {"mixers", "models", "structured", "operators", "tasks", "train", "bench"},
    "commands": KERNELS | {"mixers", "models", "structured", "operators", "tasks", "train", "bench", "arena"},
    "cli": {"", "commands"} | BASE,
    "__main__": {"cli"},
    "": {"mixers", "models", "structured", "operators", "tasks"} | BASE,
}
# The arena uses the benchmarks' public API (longseq.bench), not its modules.
PUBLIC_ONLY = {("arena", "bench")}


def _modname(p: pathlib.Path, root: pathlib.Path) -> str:
    parts = list(p.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def import_graph(root: pathlib.Path = ROOT) -> dict[str, set[str]]:
    """``{module: {longseq modules it imports}}`` for every module under ``root``, imports at any depth."""
    mods = {_modname(p, root): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, p in mods.items():
        pkg = m if p.name == "__init__.py" else m.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(p.read_text(), str(p))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in mods else mod for a in node.names]
            graph[m] |= {t for t in targets if t == "longseq" or t.startswith("longseq.")} - {m}
    return graph


def _part(mod: str) -> str:
    return mod.split(".")[1] if "." in mod else ""


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for m, targets in sorted(graph.items()):
        src = _part(m)
        for t in sorted(targets):
            dst = _part(t)
            if dst == src:
                continue
            if dst not in ALLOWED.get(src, set()):
                bad.append(f"{m} imports {t}: {src or 'longseq'} may import only {sorted(ALLOWED.get(src, set()))}")
            elif (src, dst) in PUBLIC_ONLY and t != f"longseq.{dst}":
                bad.append(f"{m} imports {t}: {src} may use only the public longseq.{dst} package")
    return bad


def test_no_import_cycles():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_no_import_goes_up_the_layers():
    bad = layer_violations(import_graph())
    assert not bad, "\n".join(bad)


def test_every_part_has_a_layer():
    parts = {_part(m) for m in import_graph()}
    assert parts <= set(ALLOWED), sorted(parts - set(ALLOWED))


def _write(tmp, files):
    for name, text in files.items():
        p = tmp / "longseq" / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return tmp / "longseq"


@pytest.mark.parametrize("where", ["module", "function"])
def test_the_checks_catch_a_cycle_and_an_upward_import(tmp_path, where):
    """The checkers on a synthetic package: a cycle through a function-level import is found, and
    so is a model importing from the tasks."""
    imp = "from .b import y" if where == "module" else "def f():\n    from .b import y\n"
    root = _write(
        tmp_path,
        {
            "__init__.py": "",
            "models/__init__.py": "",
            "models/a.py": imp + "\nx = 1\n",
            "models/b.py": "from .a import x\ny = 2\n",
            "tasks/__init__.py": "",
            "tasks/t.py": "IGNORE = -100\n",
            "models/c.py": "from ..tasks.t import IGNORE\n",
        },
    )
    g = import_graph(root)
    assert find_cycles(g) == [["longseq.models.a", "longseq.models.b"]]
    assert any("longseq.models.c imports longseq.tasks.t" in v for v in layer_violations(g))
