"""Imports run one way. mmbench's parts stand in the layers below, lowest first; every import of one
module by another (at the top, in a function or under TYPE_CHECKING: an arrow is an arrow) goes to
its own layer or one below, and no two modules import each other, however indirectly. The source is
read, not imported, so the check sees every import whatever runs. docs/layout.md shows the same order.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "mmbench"

LAYERS: tuple[tuple[str, ...], ...] = (
    ("mmbench", "mmbench.errors", "mmbench.units"),  # the root package holds only the version
    ("mmbench.launch",),  # how processes start and die with their parent
    ("mmbench.world",),  # the simulated system's parts
    ("mmbench.transports",),  # the modes, over the world's sidecars
    ("mmbench.config",),  # a point's parameters, checked against world and transports
    ("mmbench.facts",),  # what a point implies (geometry, layout, sizes, its mode), derived once
    # the record's types, the lift of older files, and the one boundary to JSON and CSV
    ("mmbench.record", "mmbench.migrations", "mmbench.results"),
    ("mmbench.rollout",),  # the K x N driver, composing world parts and a transport
    ("mmbench.backends",),  # who renders: the sim or the real library
    ("mmbench.trainer",),  # after the rollout: the orchestrator and trainer-rank processes
    ("mmbench.measure",),  # the instrument: worker, harness, probes, the model
    ("mmbench.analysis",),  # what reads results and computes from them
    ("mmbench.sweep",),  # scenarios and the loop over their points
    ("mmbench.cluster",),  # a sweep's points on a dask cluster
    ("mmbench.reporters",),  # tables, markdown, plots
    ("mmbench.api", "mmbench.cli"),  # the entry points
)


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _known(name: str, known: dict[str, Path]) -> str:
    """The module a dotted name lives in (mmbench.world.codec.CODECS -> mmbench.world.codec)."""
    while name not in known:
        name = name.rpartition(".")[0]
    return name


def imports(name: str, path: Path, known: dict[str, Path]) -> Iterator[tuple[str, int]]:
    """(imported mmbench module, line) for every import statement of a module."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "mmbench":
                    yield _known(alias.name, known), node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            if base.split(".")[0] != "mmbench":
                continue
            for alias in node.names:  # `from mmbench import results` imports a module
                full = f"{base}.{alias.name}"
                yield (full if full in known else _known(base, known)), node.lineno


def graph() -> dict[str, dict[str, int]]:
    known = modules()
    return {
        name: {target: line for target, line in imports(name, path, known) if target != name}
        for name, path in known.items()
    }


def layer_of(module: str) -> int | None:
    for i, names in enumerate(LAYERS):
        if any(module == n or (n != "mmbench" and module.startswith(n + ".")) for n in names):
            return i
    return None


def cycles(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_every_module_has_a_layer() -> None:
    unplaced = [m for m in modules() if layer_of(m) is None]
    assert not unplaced, f"place these in LAYERS (tests/unit/test_layers.py, docs/layout.md): {unplaced}"


def test_imports_never_go_up_a_layer() -> None:
    upward = []
    for source, targets in graph().items():
        for target, line in targets.items():
            above, below = layer_of(target), layer_of(source)
            if above is not None and below is not None and above > below:  # unplaced: the test above
                upward.append(f"{source}:{line} imports {target}")
    assert not upward, "imports up the layers:\n" + "\n".join(upward)


def test_no_import_cycle() -> None:
    assert cycles(graph()) == []


def test_the_checks_can_fail() -> None:
    # The graph sees imports inside functions, and a cycle or an upward import is found.
    edges = graph()
    assert "mmbench.measure.environment" in edges["mmbench.measure.machines"]  # imported in a function
    assert cycles({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}) == [["a", "b", "c"]]
    assert layer_of("mmbench.world.engine.app") < layer_of("mmbench.measure.harness")  # type: ignore[operator]
    assert layer_of("mmbench.nowhere") is None
