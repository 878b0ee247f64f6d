"""The layers, read from every module's imports (its whole syntax tree, so an import inside a
function or under ``TYPE_CHECKING`` counts too):

* ``bus`` is the shared wire layer: it imports nothing from ``actors`` or ``taskmill``;
* each actor lives in its own package under ``actors`` and never imports another actor's
  package (what two actors share lives in ``bus``);
* ``actors`` never import ``taskmill``: the public package is a client of them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported(module: str, source: str, is_package: bool = False) -> list[str]:
    """Every module ``source`` imports, absolute (relative imports resolved against ``module``)."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = module.split(".")
                base = package[: len(package) - node.level + is_package]
                base += [node.module] if node.module else []
            else:
                base = (node.module or "").split(".")
            # ``from actors import store`` imports the package ``actors.store``
            found += [".".join([*base, alias.name]) for alias in node.names]
    return found


def violations(module: str, imports: list[str]) -> list[str]:
    """The imports of ``module`` that break a layering rule."""
    layer = module.split(".")
    broken: list[str] = []
    for name in imports:
        target = name.split(".")
        if layer[0] == "bus" and target[0] in ("actors", "taskmill"):
            broken.append(f"{module} imports {name}: bus knows nothing of actors or taskmill")
        if layer[0] == "actors" and target[0] == "taskmill":
            broken.append(f"{module} imports {name}: actors never import taskmill")
        if (
            layer[0] == "actors"
            and len(layer) > 1
            and target[0] == "actors"
            and len(target) > 1
            and target[1] != layer[1]
        ):
            broken.append(f"{module} imports {name}: an actor never imports another's package")
    return broken


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", ["bus", "actors"])
def test_a_layer_imports_only_what_it_may(package: str) -> None:
    paths = modules(package)
    assert len(paths) > 5  # the walk found the package's modules
    broken = [
        violation
        for path in paths
        for violation in violations(
            module_name(path),
            imported(module_name(path), path.read_text(), path.name == "__init__.py"),
        )
    ]
    assert not broken, "\n".join(broken)


@pytest.mark.parametrize(
    ("module", "source", "rule"),
    [
        ("bus.codec", "from actors.store.db import StoreDB", "bus knows nothing"),
        ("bus.codec", "def f():\n    import taskmill.events", "bus knows nothing"),
        ("actors.dispatcher.actor", "from actors.store import claim", "another's package"),
        ("actors.dispatcher.actor", "from actors import store", "another's package"),
        ("actors.host.actor", "from ..limiter.actor import GroupLimiter", "another's package"),
        ("actors.monitor.actor", "from taskmill.task import TaskSubmission", "never import"),
    ],
)
def test_each_rule_catches_a_breach(module: str, source: str, rule: str) -> None:
    [violation] = violations(module, imported(module, source))
    assert rule in violation


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("actors.store.actor", "from actors.store.claim import claim_next"),
        ("actors.store.actor", "from .claim import claim_next"),
        ("actors.dispatcher.actor", "from bus.kinds import Submit"),
        ("taskmill.scheduler", "from actors.store.actor import StoreActor"),
    ],
)
def test_what_a_layer_may_import_passes(module: str, source: str) -> None:
    assert violations(module, imported(module, source)) == []


def module_level_imports(module: str, source: str) -> set[str]:
    """The modules of ``taskmill`` that ``source`` imports when it is imported: its top-level
    statements only (an import inside a function, or under ``TYPE_CHECKING``, waits)."""
    found: set[str] = set()
    for node in ast.parse(source).body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            for name in imported(module, ast.unparse(node)):
                parts = name.split(".")
                if parts[0] == "taskmill" and len(parts) > 1:
                    # ``from taskmill.x import Name``: the module ``taskmill.x``
                    candidate = ".".join(parts[:2])
                    if (ROOT / "taskmill" / f"{parts[1]}.py").exists() or (
                        ROOT / "taskmill" / parts[1]
                    ).is_dir():
                        found.add(candidate)
    return found - {module}


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of ``graph`` (a path that comes back to its start), or None."""
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (found := visit(target)) is not None:
                return found
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def test_the_public_modules_import_each_other_without_a_cycle() -> None:
    """The user's door reads top down: the builder writes an ``AppSpec`` (``taskmill.app``)
    which the scheduler, the wiring and the monitor's setup read, none importing another in
    a circle."""
    graph = {
        ".".join(path.relative_to(ROOT).with_suffix("").parts[:2]): module_level_imports(
            module_name(path), path.read_text(encoding="utf-8")
        )
        for path in sorted((ROOT / "taskmill").glob("*.py"))
        if path.name != "__init__.py"
    }
    assert cycle(graph) is None, cycle(graph)


def test_a_cycle_is_found() -> None:
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None
