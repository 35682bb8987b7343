"""A static scan (ast only, nothing imported) for private names of other packages used by a source
tree: see `scan`. Used by tests/test_dependencies.py."""

from __future__ import annotations

import ast
from pathlib import Path


def is_private(name: str) -> bool:
    """`_x` but not `__x__` (dunders are public protocol)."""
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _imported(tree: ast.AST) -> dict[str, str]:
    """Local name -> the dotted path it was imported as, for every import in the module (function
    level included: the scan does not follow scopes)."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                top = a.name.split(".")[0]
                names[a.asname or top] = a.name if a.asname else top
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                names[a.asname or a.name] = f"{node.module}.{a.name}"
    return names


def _import_paths(tree: ast.AST) -> list[str]:
    """The dotted paths of every module and name the module imports."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out += [f"{node.module}.{a.name}" for a in node.names]
    return out


def _chain(node: ast.expr) -> list[str] | None:
    """`a.b.c` -> ["a", "b", "c"]; None when the chain does not start at a plain name."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return [node.id, *reversed(parts)] if isinstance(node, ast.Name) else None


def _defined(trees: list[ast.AST]) -> set[str]:
    """Every name the scanned tree defines: functions, classes, assigned names and attributes,
    parameters (its own private names are its business)."""
    out: set[str] = set()
    for tree in trees:
        for n in ast.walk(tree):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                out.add(n.name)
            elif isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
                out.add(n.id)
            elif isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Store):
                out.add(n.attr)
            elif isinstance(n, ast.arg):
                out.add(n.arg)
    return out


def _of_checked(path: str, checked: tuple[str, ...]) -> bool:
    return path.split(".")[0] in checked


def _private_paths(tree: ast.AST, checked: tuple[str, ...]) -> set[str]:
    """Dotted paths into `checked` packages with a private part: imports, attribute chains from an
    imported name, and private methods of classes that subclass one of their classes."""
    imported = _imported(tree)
    paths = set(_import_paths(tree))
    for node in ast.walk(tree):
        chain = _chain(node) if isinstance(node, ast.Attribute) else None
        if chain and chain[0] in imported:
            paths.add(".".join([imported[chain[0]], *chain[1:]]))
        if isinstance(node, ast.ClassDef):
            for base in filter(None, map(_chain, node.bases)):
                if base[0] in imported:
                    prefix = ".".join([imported[base[0]], *base[1:]])
                    paths |= {
                        f"{prefix}.{f.name}"
                        for f in node.body
                        if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                    }
    return {p for p in paths if _of_checked(p, checked) and any(map(is_private, p.split(".")))}


def _private_attributes(tree: ast.AST) -> set[str]:
    """Private attribute names read from any object: `x._y` and `getattr(x, "_y", ...)`."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and is_private(node.attr):
            out.add(node.attr)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "hasattr")
            and len(node.args) >= 2
        ):
            name = node.args[1]
            if (
                isinstance(name, ast.Constant)
                and isinstance(name.value, str)
                and is_private(name.value)
            ):
                out.add(name.value)
            elif (
                isinstance(name, ast.JoinedStr)
                and isinstance(name.values[0], ast.Constant)
                and is_private(str(name.values[0].value))
            ):
                out.add(str(name.values[0].value) + "*")
    return out


def scan(package: Path, checked: tuple[str, ...]) -> tuple[set[str], set[str]]:
    """(private paths of the `checked` packages used by the `.py` files under `package`, private
    attribute names read from objects that the files neither import nor define). A name read
    through an imported module of another library (torch's `nn.modules.conv._ConvNd`) is in
    neither: only `checked` packages are judged; the second set is for the caller to place."""
    trees = [ast.parse(p.read_text(), str(p)) for p in sorted(package.rglob("*.py"))]
    defined = _defined(trees)
    found: set[str] = set()
    attributes: set[str] = set()
    for tree in trees:
        paths = _private_paths(tree, checked)
        found |= paths
        reached = {part for p in paths for part in p.split(".")}
        imported_chains = _imported_private_parts(tree)
        attributes |= _private_attributes(tree) - defined - reached - imported_chains
    return found, attributes


def _imported_private_parts(tree: ast.AST) -> set[str]:
    """Private names read through a chain that starts at an imported name (of any package)."""
    imported = _imported(tree)
    out = set()
    for node in ast.walk(tree):
        chain = _chain(node) if isinstance(node, ast.Attribute) else None
        if chain and chain[0] in imported:
            out |= {part for part in chain[1:] if is_private(part)}
    return out
