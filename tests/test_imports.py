"""The package's import graph has no circle: every import of a mnist_hpc module by another,
at the top of a file or inside a function (a lazy import is still an arrow), read from the
source. The lazy public API of ``mnist_hpc/__init__.py`` (its ``__getattr__``) is left aside, and so
are the imports under ``if TYPE_CHECKING:`` (annotations only: mypy reads them, Python never runs
them)."""

from __future__ import annotations

import ast

from tests.paths import ROOT

PACKAGE = ROOT / "mnist_hpc"


def modules() -> dict:
    found = {}
    for p in PACKAGE.rglob("*.py"):
        parts = list(p.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = p
    return found


def import_graph() -> dict:
    """{module: the mnist_hpc modules it imports}; ``from a.b import c`` is an arrow to a.b.c
    when that is a module, else to a.b."""
    mods = modules()
    graph = {}
    for name, path in mods.items():
        if name == "mnist_hpc":
            continue  # the lazy public API
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        arrows = set()
        tree = ast.parse(path.read_text(), str(path))
        typing_only = {
            id(n)
            for block in ast.walk(tree)
            if isinstance(block, ast.If) and _is_type_checking(block.test)
            for stmt in block.body
            for n in ast.walk(stmt)
        }
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.Import):
                arrows |= {a.name for a in node.names if a.name in mods}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                for a in node.names:
                    full = f"{base}.{a.name}"
                    arrows.add(full if full in mods else base)
        graph[name] = {m for m in arrows if m in mods and m not in ("mnist_hpc", name)}
    return graph


def _is_type_checking(test: ast.expr) -> bool:
    """``if TYPE_CHECKING:`` or ``if typing.TYPE_CHECKING:``."""
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def circles(graph: dict) -> list:
    """The strongly connected groups of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_package_has_no_import_circle():
    graph = import_graph()
    assert len(graph) > 50 and "mnist_hpc.training.inference" in graph["mnist_hpc.training.export"]
    assert circles(graph) == []


def test_the_walker_sees_a_circle_made_of_lazy_imports():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_exported_models_have_one_module_that_writer_and_user_share():
    graph = import_graph()
    shared = "mnist_hpc.training.exported"
    assert shared in graph["mnist_hpc.training.export"] and shared in graph["mnist_hpc.training.inference"]
    assert "mnist_hpc.training.export" not in graph["mnist_hpc.training.inference"]


def test_an_import_for_annotations_only_is_no_arrow():
    source = (PACKAGE / "config" / "datasets.py").read_text()
    assert "if TYPE_CHECKING:\n    from mnist_hpc.config.schema import DataConfig" in source
    assert "mnist_hpc.config.schema" not in import_graph()["mnist_hpc.config.datasets"]
