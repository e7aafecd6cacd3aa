"""The architecture contract of docs/architecture.md, enforced on the source tree.

The layering is read from the ``layers`` block of docs/architecture.md, so the page and the
check cannot drift apart. Every import counts, including those inside functions.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections import defaultdict
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
ENGINE = "cp2_engine"
PLUGIN = "napari_cp2"
GUI_MODULES = ("napari", "qtpy", "magicgui", "PyQt5", "PyQt6", "PySide2", "PySide6", "vispy")
MAX_MODULE_LINES = 500
MAX_FUNCTION_CODE_LINES = 60
LONG_REASON = "Long function:"


def read_layers(text: str) -> list[list[str]]:
    """Engine packages per layer, top layer first, from the doc's ```layers block.

    Examples
    --------
    >>> read_layers("```layers\\ncli\\nio | metrics\\n```")
    [['cli'], ['io', 'metrics']]
    """
    block = re.search(r"```layers\n(.*?)```", text, re.S)
    if block is None:
        raise ValueError("docs/architecture.md has no ```layers block")
    lines = [ln.split("#")[0].strip() for ln in block.group(1).splitlines()]
    return [[p.strip() for p in ln.split("|")] for ln in lines if ln]


@cache
def layers() -> list[list[str]]:
    return read_layers((ROOT / "docs/architecture.md").read_text())


def layer_of(package: str) -> int:
    for depth, row in enumerate(layers()):
        if package in row:
            return depth
    raise AssertionError(f"package {package!r} is not in the layers of docs/architecture.md")


def _rel(path: Path) -> Path:
    return path.relative_to(SRC.parent)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def source_files(package: str) -> list[Path]:
    return sorted(p for p in (SRC / package).rglob("*.py") if p.name != "_version.py")


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


@cache
def lazy_exports(package: str) -> dict[str, str]:
    """name -> submodule of a package whose ``__init__`` uses ``lazy_loader.attach``."""
    init = SRC / package.replace(".", "/") / "__init__.py"
    if not init.is_file():
        return {}
    out = {}
    for node in ast.walk(ast.parse(init.read_text())):
        if isinstance(node, ast.keyword) and node.arg == "submod_attrs":
            for key, value in zip(node.value.keys, node.value.values, strict=True):
                for elt in value.elts:
                    out[elt.value] = f"{package}.{key.value}"
    return out


def imports_of(path: Path) -> list[tuple[str, str | None, int]]:
    """(imported module, imported name or None, line) of every import in a file."""
    module = module_name(path)
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, None, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(node, module, path.name == "__init__.py")
            out += [(target, alias.name, node.lineno) for alias in node.names]
    return out


def engine_package(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != ENGINE:
        return None
    return parts[1] if len(parts) > 1 else ""


def defining_module(target: str, name: str | None) -> str:
    """The module an import really loads: a submodule, or the one a lazy export names."""
    if name is None:
        return target
    candidate = f"{target}.{name}"
    if (SRC / candidate.replace(".", "/")).with_suffix(".py").is_file() or (
        SRC / candidate.replace(".", "/")
    ).is_dir():
        return candidate
    return lazy_exports(target).get(name, target)


def module_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for path in source_files(ENGINE):
        me = module_name(path)
        for target, name, _ in imports_of(path):
            if engine_package(target) is None:
                continue
            dep = defining_module(target, name)
            if dep != me and not me.startswith(dep + "."):
                graph[me].add(dep)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as a list of modules, or None.

    Examples
    --------
    >>> find_cycle({"a": {"b"}, "b": {"a"}})
    ['a', 'b', 'a']
    >>> find_cycle({"a": {"b"}, "b": set()}) is None
    True
    """
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def package_violations() -> list[str]:
    """Imports that go up the layers or sideways between packages of one layer."""
    bad = []
    for path in source_files(ENGINE):
        me = engine_package(module_name(path))
        if not me:  # the root package re-exports the public API of every layer
            continue
        for target, name, line in imports_of(path):
            other = engine_package(defining_module(target, name))
            if other in (None, "", me) or other.startswith("_"):
                continue
            if layer_of(other) <= layer_of(me):
                bad.append(f"{_rel(path)}:{line}: {me} imports {other}")
    return bad


def private_violations(package: str) -> list[str]:
    """``from x._m import y`` or ``from x import _y`` across package boundaries."""
    bad = []
    for path in source_files(package):
        me = module_name(path)
        my_pkg = me.split(".")[:2] if package == ENGINE else [PLUGIN]
        for target, name, line in imports_of(path):
            if not target.startswith((ENGINE, PLUGIN)):
                continue
            parts = target.split(".")
            inside = parts[: len(my_pkg)] == my_pkg
            names = [*parts[1:], *([name] if name else [])]
            if not inside and any(p.startswith("_") and p != "__version__" for p in names):
                bad.append(f"{_rel(path)}:{line}: imports {target} {name or ''}")
    return bad


def test_every_engine_package_has_a_layer():
    packages = {p.name for p in (SRC / ENGINE).iterdir() if (p / "__init__.py").is_file()}
    listed = {p for row in layers() for p in row}
    assert packages == listed


def test_layering():
    assert package_violations() == []


def test_no_import_cycles():
    assert find_cycle(module_graph()) is None


def test_no_private_names_across_packages():
    assert private_violations(ENGINE) == []
    assert private_violations(PLUGIN) == []


def test_engine_never_imports_a_gui():
    bad = [
        f"{_rel(path)}:{line}: {target}"
        for path in source_files(ENGINE)
        for target, _, line in imports_of(path)
        if target.split(".")[0] in GUI_MODULES
    ]
    assert bad == []


def test_only_the_workers_module_touches_threads():
    touching = {
        path.name
        for path in source_files(PLUGIN)
        for target, name, _ in imports_of(path)
        if target.startswith("napari.qt.threading")
        or target in ("threading", "concurrent.futures")
        or (target == "napari.qt" and name == "threading")
    }
    assert touching <= {"_workers.py"}


@pytest.mark.parametrize("package", [ENGINE, PLUGIN])
def test_module_and_function_size(package):
    long_modules, long_functions = [], []
    for path in source_files(package):
        text = path.read_text()
        lines = text.splitlines()
        if len(lines) > MAX_MODULE_LINES:
            long_modules.append(f"{_rel(path)}: {len(lines)} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = _code_lines(lines, node)
                doc = ast.get_docstring(node) or ""
                if n > MAX_FUNCTION_CODE_LINES and LONG_REASON not in doc:
                    long_functions.append(f"{_rel(path)}:{node.name}: {n} lines")
    assert long_modules == []
    assert long_functions == []


def _code_lines(lines: list[str], node) -> int:
    body = node.body
    first = body[0]
    has_doc = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
    if has_doc and len(body) == 1:
        return 0
    start = body[1].lineno if has_doc else first.lineno
    return sum(
        1
        for ln in lines[start - 1 : node.end_lineno]
        if ln.strip() and not ln.strip().startswith("#")
    )


def test_the_checker_catches_a_forbidden_import(tmp_path, monkeypatch):
    """The check fails on a new upward import and on a new cycle (shown once, here)."""
    fake = tmp_path / "src"
    pkg = fake / ENGINE
    for name, body in {
        "__init__.py": "",
        "io/__init__.py": "",
        "io/_files.py": "from cp2_engine.cli import main\n",  # io -> cli: up the layers
        "cli/__init__.py": "",
        "cli/_main.py": "from cp2_engine.cli import _other\n",
        "cli/_other.py": "def f():\n    from cp2_engine.cli import _main\n",  # a cycle
    }.items():
        (pkg / name).parent.mkdir(parents=True, exist_ok=True)
        (pkg / name).write_text(body)
    monkeypatch.setitem(globals(), "SRC", fake)  # undone after the test: SRC is real again
    lazy_exports.cache_clear()
    try:
        assert any("io imports cli" in v for v in package_violations())
        cycle = find_cycle(module_graph())
        assert cycle is not None and set(cycle) == {
            "cp2_engine.cli._main",
            "cp2_engine.cli._other",
        }
    finally:
        lazy_exports.cache_clear()


def _top_level_names(path: Path) -> set[str]:
    """Names a module defines at top level (def, class, assignment, import), ``if``/``try``
    bodies included."""
    names, todo = set(), list(ast.parse(path.read_text()).body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, ast.If | ast.Try):
            todo += [*node.body, *node.orelse, *getattr(node, "handlers", ())]
            todo += getattr(node, "finalbody", [])
        elif isinstance(node, ast.ExceptHandler):
            todo += node.body
    return names


@pytest.mark.parametrize("package", [ENGINE, PLUGIN])
def test_public_names_are_lazy_and_defined(package):
    """Every ``__init__`` lists its public names with ``lazy_loader.attach`` (no hand-written
    ``__getattr__``), and each listed name is defined where the list says."""
    missing, hand_written = [], []
    for init in sorted((SRC / package).rglob("__init__.py")):
        pkg = module_name(init)
        if any(isinstance(n, ast.FunctionDef) for n in ast.parse(init.read_text()).body):
            hand_written.append(pkg)
        for name, target in lazy_exports(pkg).items():
            file = SRC / (target.replace(".", "/") + ".py")
            found = (
                name in _top_level_names(file) if file.is_file() else name in lazy_exports(target)
            )
            if not found:
                missing.append(f"{pkg}.{name} (from {target})")
    assert hand_written == []
    assert missing == []
    assert lazy_exports(ENGINE) and lazy_exports(PLUGIN)


def test_importing_the_engine_is_cheap():
    """``import cp2_engine`` imports neither torch nor a subpackage, and has a version."""
    code = (
        "import sys, cp2_engine\n"
        "assert cp2_engine.__version__\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy', 'scipy')"
        " or m.startswith('cp2_engine.') and m != 'cp2_engine._version']\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
