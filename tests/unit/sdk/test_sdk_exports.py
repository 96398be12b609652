"""``dinfer.sdk`` re-exports its public names lazily from three lists (``__all__``, the module map, the type
checkers' imports): they must name the same things, and every name must resolve to its module's object."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import dinfer.sdk as sdk


def test_every_public_name_is_mapped_and_resolves() -> None:
    assert sorted(sdk.__all__) == sorted(sdk._LAZY)
    for name, module in sdk._LAZY.items():
        assert getattr(sdk, name) is getattr(importlib.import_module(module), name), name


def test_type_checking_imports_name_the_same_modules() -> None:
    tree = ast.parse(Path(sdk.__file__).read_text())
    guarded = next(node for node in tree.body if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING")
    imported = {alias.name: stmt.module for stmt in guarded.body if isinstance(stmt, ast.ImportFrom)
                for alias in stmt.names}
    assert imported == sdk._LAZY
