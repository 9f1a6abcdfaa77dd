"""The floors hold: no import climbs a floor, no module imports itself through others, and
every import inside a function says why it is not at the top of its module.

The floors are import-linter contracts in ``pyproject.toml``; the cycle check runs over
the same import graph (grimp), function-local imports included, so a local import cannot
hide a cycle.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import grimp

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("proto", "chain", "worker", "router", "tessera", "bench")
GENERATED = REPO / "proto" / "tessera"  # protoc output, never edited by hand


def test_import_linter_contracts_hold():
    run = subprocess.run([Path(sys.executable).parent / "lint-imports", "--no-cache"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "0 broken" in run.stdout


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.find_modules_directly_imported_by(w)))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


def test_no_import_cycles():
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    assert _cycles(graph) == []


def test_cycle_check_finds_a_cycle():
    g = grimp.ImportGraph()
    for a, b in [("p.a", "p.b"), ("p.b", "p.c"), ("p.c", "p.a"), ("p.c", "p.d")]:
        g.add_import(importer=a, imported=b)
    assert _cycles(g) == [["p.a", "p.b", "p.c"]]


def _unexplained_local_imports(path: Path) -> list[str]:
    """Function-local imports not under a ``# lazy: reason`` comment (on the line, or heading
    the contiguous run of imports it belongs to)."""
    lines = path.read_text().splitlines()
    bad = []
    for node in ast.walk(ast.parse("\n".join(lines))):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for sub in ast.walk(node):
            if not isinstance(sub, (ast.Import, ast.ImportFrom)):
                continue
            i = sub.lineno - 1
            while i > 0 and lines[i - 1].strip().startswith(("import ", "from ")):
                i -= 1  # to the first import of the run
            if "# lazy:" not in lines[sub.lineno - 1] and "# lazy:" not in lines[i - 1] \
                    and "# lazy:" not in lines[i]:
                bad.append(f"{path.relative_to(REPO)}:{sub.lineno}: {lines[sub.lineno - 1].strip()}")
    return bad


def test_function_local_imports_say_why():
    bad = []
    for pkg in PACKAGES + ("examples",):
        for path in sorted((REPO / pkg).rglob("*.py")):
            if GENERATED not in path.parents:
                bad += _unexplained_local_imports(path)
    assert bad == [], "move these to the top of their module or say why with '# lazy: ...':\n" + "\n".join(bad)
