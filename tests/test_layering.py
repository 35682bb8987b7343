"""Layering and size rules of the prunetune package, checked statically (ast only: nothing is
imported, no torch: a few seconds).

The import graph has one node per module of prunetune (a package is its `__init__`). An edge is a
`import prunetune.x`, `from prunetune.x import y` or relative import found in the module's source:
`from P import y` points at the module P.y when that is a module, else at P. A submodule's import
does not add an edge to its parent packages' `__init__` (Python runs them first, but counting that
would make every package that re-exports its submodules a circle). "Module level" means an import
run when the module loads (statements at the top, inside top-level if/try included); "lazy" adds
the imports inside functions and methods, which run later but still tie the layers together.

Function length is `end_lineno - lineno + 1` of the `def` node: from the `def` line (decorators
excluded) to the last line of its body, signature, docstring and nested functions included.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "prunetune"
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 400

# Functions allowed over MAX_FUNCTION_LINES (none: every one was split in issue 16)
ALLOWLIST: set[str] = set()
# Private names one module may take from another (module, name): none
PRIVATE_IMPORTS_ALLOWED: set[tuple[str, str]] = set()


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name."""
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


MODULES = _modules()
TREES = {name: ast.parse(path.read_text(), str(path)) for name, path in MODULES.items()}


def _top_level(body: list[ast.stmt]):
    """The statements run when a module loads: the body, and the branches of top-level if/try."""
    for node in body:
        yield node
        if isinstance(node, (ast.If, ast.Try)):
            for branch in (node.body, node.orelse, getattr(node, "finalbody", [])):
                yield from _top_level(branch)
            for handler in getattr(node, "handlers", []):
                yield from _top_level(handler.body)


def _import_nodes(tree: ast.Module, lazy: bool) -> list[ast.Import | ast.ImportFrom]:
    nodes = ast.walk(tree) if lazy else _top_level(tree.body)
    return [n for n in nodes if isinstance(n, (ast.Import, ast.ImportFrom))]


def _base(module: str, node: ast.ImportFrom) -> str:
    """The absolute module a `from ... import` names (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    package = module.split(".") if MODULES[module].name == "__init__.py" else module.split(".")[:-1]
    package = package[: len(package) - (node.level - 1)]
    return ".".join(package + ([node.module] if node.module else []))


def imports(module: str, lazy: bool) -> list[tuple[str, int]]:
    """(imported prunetune module, line) for each import in `module`."""
    found = []
    for node in _import_nodes(TREES[module], lazy):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name in MODULES]
            continue
        base = _base(module, node)
        for alias in node.names:
            if f"{base}.{alias.name}" in MODULES:
                found.append((f"{base}.{alias.name}", node.lineno))
            elif base in MODULES:
                found.append((base, node.lineno))
    return found


def graph(lazy: bool) -> dict[str, set[str]]:
    return {m: {target for target, _ in imports(m, lazy) if target != m} for m in MODULES}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def _explain(components: list[list[str]], lazy: bool) -> str:
    lines = []
    for component in components:
        lines += [
            f"{m}:{line} imports {t}"
            for m in component
            for t, line in imports(m, lazy)
            if t in component and t != m
        ]
    return "import circle(s):\n" + "\n".join(lines)


def test_the_cycle_finder_finds_circles_and_only_circles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_the_graph_sees_absolute_relative_and_lazy_imports():
    top = graph(lazy=False)
    assert "prunetune.models.zoo" in top["prunetune.models.factory"]
    assert "prunetune.errors" in top["prunetune.registry"]
    assert "prunetune.models.registry" in top["prunetune.models.zoo"]
    # the CLI's command modules import what they run inside the commands (--help imports no torch)
    assert "prunetune.models" not in top["prunetune.cli.base_model"]
    assert "prunetune.models" in graph(lazy=True)["prunetune.cli.base_model"]


def test_no_import_circle_among_module_level_imports():
    found = cycles(graph(lazy=False))
    assert not found, _explain(found, lazy=False)


def test_no_import_circle_even_through_function_level_imports():
    found = cycles(graph(lazy=True))
    assert not found, _explain(found, lazy=True)


def _defined_names(tree: ast.Module) -> set[str] | None:
    """The names a module defines at its top level; None when it has a module `__getattr__`."""
    names: set[str] = set()
    for node in _top_level(tree.body):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return None if "__getattr__" in names else names


def test_every_name_imported_from_prunetune_exists():
    """`from prunetune.x import y` names a module or a top-level name of x (a moved function
    left behind by one side of a merge shows here, not in a lazy import at run time)."""
    missing = []
    for module in MODULES:
        for node in _import_nodes(TREES[module], lazy=True):
            if not isinstance(node, ast.ImportFrom) or _base(module, node) not in MODULES:
                continue
            base = _base(module, node)
            defined = _defined_names(TREES[base])
            if defined is None:
                continue
            missing += [
                f"{module}:{node.lineno} imports {alias.name} from {base}"
                for alias in node.names
                if alias.name not in defined and f"{base}.{alias.name}" not in MODULES
            ]
    assert not missing, "\n".join(missing)


def _functions() -> list[tuple[str, int, int]]:
    """(qualified name, first line, length) of every function and method in the package."""
    found = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}.{child.name}"
                found.append((name, child.lineno, child.end_lineno - child.lineno + 1))
                visit(child, name)
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}.{child.name}")
            else:
                visit(child, prefix)

    for module, tree in TREES.items():
        visit(tree, module)
    return found


def test_no_function_is_longer_than_60_lines():
    functions = _functions()
    assert len(functions) > 300  # the walk reaches every module, class and nested function
    too_long = [
        f"{name} (line {line}): {n} lines"
        for name, line, n in functions
        if n > MAX_FUNCTION_LINES and name not in ALLOWLIST
    ]
    assert not too_long, "\n".join(too_long)


def test_no_module_is_longer_than_400_lines():
    """One module, one job (issue 25): a module over MAX_MODULE_LINES lines (formatted at line
    length 100) does several; split it into a package of modules that do one each."""
    too_long = [
        f"{name}: {n} lines"
        for name, path in MODULES.items()
        if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    ]
    assert not too_long, "\n".join(sorted(too_long))


def test_the_allowlist_names_only_functions_still_too_long():
    lengths = {name: n for name, _, n in _functions()}
    stale = [name for name in ALLOWLIST if lengths.get(name, 0) <= MAX_FUNCTION_LINES]
    assert not stale, f"remove from ALLOWLIST (gone or now short enough): {stale}"


def test_the_ray_searcher_is_a_plain_searcher_on_the_study():
    """Issue 16: the Ray side subclasses `ray.tune.search.Searcher` and delegates to the study;
    it neither subclasses OptunaSearch nor reads or writes Tune searchers' private state."""
    tree = TREES["prunetune.search.ray_searcher"]
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    names |= {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    names |= {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert "OptunaSearch" not in names
    assert not {
        n for n in names if n.startswith(("_ot_", "_completed_trials", "_space", "_metric"))
    }
    bases = [ast.unparse(b) for n in ast.walk(tree) if isinstance(n, ast.ClassDef) for b in n.bases]
    assert "Searcher" in bases


def _references(folders: list[Path]) -> set[str]:
    """Every name the code in `folders` uses: names, attributes, imported names, identifier strings
    (registry keys, the lazy exports of prunetune/__init__)."""
    used: set[str] = set()
    for folder in folders:
        for path in folder.rglob("*.py"):
            for n in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(n, ast.Name):
                    used.add(n.id)
                elif isinstance(n, ast.Attribute):
                    used.add(n.attr)
                elif isinstance(n, ast.alias):
                    used.add(n.name.rpartition(".")[2])
                elif (
                    isinstance(n, ast.Constant)
                    and isinstance(n.value, str)
                    and n.value.isidentifier()
                ):
                    used.add(n.value)
    return used


def test_every_module_level_function_and_class_is_used():
    """Dead code check: a top-level def or class (not registered by a decorator) that nothing in
    the package, the benchmarks or the examples names. Tests do not count: code only a test calls
    is dead too. (Methods are left out: framework hooks such as forward are called by name.)"""
    root = PACKAGE.parent
    used = _references([PACKAGE] + [root / d for d in ("bench", "examples") if (root / d).is_dir()])
    unused = [
        f"{module}:{node.lineno} {node.name}"
        for module, tree in TREES.items()
        for node in tree.body
        if isinstance(node, (ast.FunctionDef, ast.ClassDef))
        and not node.decorator_list
        and not node.name.startswith("__")
        and node.name not in used
    ]
    assert not unused, "\n".join(unused)


def _private_uses(module: str) -> set[str]:
    """The `other_module._name`s `module` takes from other prunetune modules: by a from-import, or
    as an attribute of a module it imported."""
    tree, found, aliases = TREES[module], set(), {}
    for node in _import_nodes(tree, lazy=True):
        if isinstance(node, ast.ImportFrom) and _base(module, node) in MODULES:
            base = _base(module, node)
            found |= {
                f"{base}.{a.name}"
                for a in node.names
                if a.name.startswith("_") and not a.name.startswith("__") and base != module
            }
            aliases |= {
                a.asname or a.name: f"{base}.{a.name}"
                for a in node.names
                if f"{base}.{a.name}" in MODULES
            }
        elif isinstance(node, ast.Import):
            aliases |= {a.asname: a.name for a in node.names if a.asname and a.name in MODULES}
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            found.add(f"{aliases[node.value.id]}.{node.attr}")
    return found


def test_no_module_reaches_into_another_modules_private_names():
    uses = {(m, name) for m in MODULES for name in _private_uses(m)}
    new = sorted(uses - PRIVATE_IMPORTS_ALLOWED)
    assert not new, "\n".join(f"{m} uses {n}" for m, n in new)
    assert not PRIVATE_IMPORTS_ALLOWED - uses, (
        f"remove from PRIVATE_IMPORTS_ALLOWED: {PRIVATE_IMPORTS_ALLOWED - uses}"
    )


MAX_DATACLASS_FIELDS = 15
TESTS = PACKAGE.parent / "tests"


def _is_dataclass(node: ast.ClassDef) -> bool:
    """Decorated `@dataclass`, `@dataclass(...)`, `@dataclasses.dataclass` or its call."""
    for decorator in node.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        if ast.unparse(target) in ("dataclass", "dataclasses.dataclass"):
            return True
    return False


def _dataclass_fields(node: ast.ClassDef) -> list[str]:
    """The fields a dataclass body declares: annotated names that are not ClassVar."""
    return [
        s.target.id
        for s in node.body
        if isinstance(s, ast.AnnAssign)
        and isinstance(s.target, ast.Name)
        and "ClassVar" not in ast.unparse(s.annotation)
    ]


def dataclass_sizes(tree: ast.Module) -> dict[str, int]:
    """Field count of every dataclass defined in `tree` (nested classes included), by name."""
    return {
        n.name: len(_dataclass_fields(n))
        for n in ast.walk(tree)
        if isinstance(n, ast.ClassDef) and _is_dataclass(n)
    }


def test_the_dataclass_counter_counts_fields_and_only_fields():
    tree = ast.parse(
        "from dataclasses import dataclass\nimport dataclasses\nfrom typing import ClassVar\n"
        "@dataclass(frozen=True)\nclass A:\n    x: int\n    y: str = ''\n"
        "    K: ClassVar[int] = 3\n    z = 4\n    def f(self) -> int:\n        return 1\n"
        "@dataclasses.dataclass\nclass B:\n    a: int\nclass C:\n    b: int\n"
    )
    assert dataclass_sizes(tree) == {"A": 2, "B": 1}


def test_no_dataclass_has_more_than_15_fields():
    """A dataclass of many fields mixes concerns (issue 25: SearchConfig had 43): split it into
    parts, each a dataclass of its own."""
    sizes = {f"{m}.{c}": n for m, tree in TREES.items() for c, n in dataclass_sizes(tree).items()}
    assert len(sizes) > 20  # the walk reaches the package's dataclasses
    too_big = [
        f"{name}: {n} fields" for name, n in sorted(sizes.items()) if n > MAX_DATACLASS_FIELDS
    ]
    assert not too_big, "\n".join(too_big)


def mirror_test(module: str) -> Path:
    """Where the tests of a module live: tests/<subpackage path>/test_<name>.py
    (prunetune.search.pareto -> tests/search/test_pareto.py)."""
    *packages, name = module.split(".")[1:]
    return TESTS.joinpath(*packages, f"test_{name}.py")


def public_modules() -> list[str]:
    """The modules of the package whose own name does not start with '_' (packages' `__init__`
    and `__main__` are not modules of their own here)."""
    return [m for m, path in MODULES.items() if not path.stem.startswith("_")]


def test_the_mirror_of_a_module_is_its_test_file_in_the_same_subpackage_path():
    assert mirror_test("prunetune.search.pareto") == TESTS / "search" / "test_pareto.py"
    assert mirror_test("prunetune.names") == TESTS / "test_names.py"
    assert "prunetune.search.pareto" in public_modules()
    assert not {"prunetune", "prunetune.search", "prunetune.__main__"} & set(public_modules())


def test_every_public_module_has_a_mirror_test_file():
    """tests/ is laid out like the package, so a module's tests are found where the module is."""
    missing = [
        f"{MODULES[m].relative_to(PACKAGE.parent)} -> {mirror_test(m).relative_to(PACKAGE.parent)}"
        for m in public_modules()
        if not mirror_test(m).is_file()
    ]
    assert not missing, "modules without a mirror test file:\n" + "\n".join(missing)
