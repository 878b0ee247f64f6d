"""``docs/architecture.md`` against the code: every place it names exists.

The page ends with a marked list of references, one a line: a file (``bus/protocol.py``),
optionally a module-level function or class in it (``actors/store/claim.py:claim_next``) or a
method of a class (``actors/store/actor.py:StoreActor._on_batch``). The prose names places the
same way (a function or method there must be listed too), or as ``Class.method`` once the class
is in the list; every one must exist, so a rename shows up here before a newcomer is lost.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "architecture.md"

BLOCK = re.compile(r"<!-- references -->\n(.*?)<!-- /references -->", re.DOTALL)
LOCATION = re.compile(r"`((?:bus|actors|taskmill)/[\w/]+\.py)(?::([\w.]+))?`")
QUALIFIED = re.compile(r"`([A-Z]\w*)\.(\w+)`")


def split_doc() -> tuple[str, list[str]]:
    """The prose, and the references of the marked list."""
    text = DOC.read_text(encoding="utf-8")
    block = BLOCK.search(text)
    assert block, "docs/architecture.md has no <!-- references --> list"
    entries = [line.strip() for line in block.group(1).splitlines() if line.strip()]
    for entry in entries:
        assert re.fullmatch(r"- `[^`]+`", entry), f"not a reference line: {entry!r}"
    return text[: block.start()], [entry[3:-1] for entry in entries]


@cache
def definitions(path: str) -> dict[str, ast.AST]:
    """Every module-level function and class of ``path``, and every method as ``Class.name``."""
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
    found: dict[str, ast.AST] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            found[node.name] = node
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    found[f"{node.name}.{item.name}"] = item
    return found


def missing(reference: str) -> str | None:
    """Why ``reference`` (``path.py`` or ``path.py:name``) names nothing; None when it exists."""
    path, _, name = reference.partition(":")
    if not (ROOT / path).is_file():
        return f"{path}: no such file"
    if name and name not in definitions(path):
        return f"{path} defines no {name}"
    return None


def test_the_list_is_not_empty_and_has_no_repeats() -> None:
    _, references = split_doc()
    assert len(references) > 20
    assert len(references) == len(set(references))


@pytest.mark.parametrize("reference", split_doc()[1])
def test_a_listed_reference_exists(reference: str) -> None:
    assert missing(reference) is None, missing(reference)


def test_every_place_the_prose_names_exists_and_is_listed() -> None:
    prose, references = split_doc()
    named = {f"{path}:{name}" if name else path for path, name in LOCATION.findall(prose)}
    assert [problem for problem in map(missing, sorted(named)) if problem] == []
    assert {ref for ref in named if ":" in ref} - set(references) == set()


def test_every_class_method_the_prose_names_exists() -> None:
    prose, references = split_doc()
    classes = {
        name.split(".")[0]: path
        for path, _, name in (ref.partition(":") for ref in references)
        if name[:1].isupper()
    }
    problems = []
    for cls, method in set(QUALIFIED.findall(prose)):
        if cls not in classes:
            problems.append(f"{cls}.{method}: {cls} is not in the references")
        elif f"{cls}.{method}" not in definitions(classes[cls]):
            problems.append(f"{cls}.{method}: no such method in {classes[cls]}")
    assert not problems, problems


def test_the_checker_notices_a_wrong_reference() -> None:
    assert missing("actors/store/actor.py:StoreActor._on_batch") is None
    assert missing("actors/store/actor.py:StoreActor._no_such_method") is not None
    assert missing("actors/store/claim.py:no_such_function") is not None
    assert missing("actors/store/no_such_module.py") is not None
