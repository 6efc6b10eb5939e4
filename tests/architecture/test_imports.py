"""The import rules of docs/architecture.md, checked on the source (every import, lazy ones too).

transport -> engine -> ihuman_kernels; the inference code never imports the procedural data generator;
no two modules import each other, directly or around a loop.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
PACKAGES = ("engine", "ihuman_kernels", "transport", "ihuman")
# What answers a live or offline request: none of it may import the procedural data generator.
INFERENCE = (
    "engine.models", "engine.generation", "engine.streaming", "engine.render", "engine.audio",
    "engine.media", "engine.flow", "engine.pose", "engine.parts", "engine.checkpoint",
    "engine.config", "engine.presets", "transport",
)  # fmt: skip


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(source: str, name: str, package: str, modules: set[str]) -> set[str]:
    """The project `modules` that module `name` (of `package`) imports in `source`, at any depth
    (`from a import b` of a submodule counts as a.b)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    [*package.split(".")[: len(package.split(".")) - node.level + 1], base]
                ).strip(".")
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {m for m in found if m in modules and m != name}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py") if "assets" not in p.parts]
    modules = {_module(p) for p in files}
    graph = {}
    for p in files:
        name = _module(p)
        package = name if p.name == "__init__.py" else name.rpartition(".")[0]
        graph[name] = _imports(p.read_text(), name, package, modules)
    return graph


def _top(module: str) -> str:
    return module.split(".", maxsplit=1)[0]


def test_layers_point_one_way(graph: dict[str, set[str]]) -> None:
    """The kernels import no other package of ours; engine imports only the kernels; transport
    not the command line or its benchmarks."""
    allowed = {
        "ihuman_kernels": {"ihuman_kernels"},
        "engine": {"engine", "ihuman_kernels"},
        "transport": {"transport", "engine", "ihuman_kernels"},
    }
    wrong = [
        f"{m} -> {d}"
        for m, deps in graph.items()
        if _top(m) in allowed
        for d in deps
        if _top(d) not in allowed[_top(m)]
    ]
    assert not wrong, wrong


def test_inference_never_imports_the_data_generator(graph: dict[str, set[str]]) -> None:
    wrong = [
        f"{m} -> {d}"
        for m, deps in graph.items()
        if m.startswith(INFERENCE)
        for d in deps
        if d == "engine.data" or d.startswith("engine.data.")
    ]
    assert not wrong, wrong


def test_no_import_cycles(graph: dict[str, set[str]]) -> None:
    """Module level: a depth-first search finds no loop (package __init__ files included)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for dep in sorted(graph.get(module, ())):
            if state.get(dep) == 1:
                cycles.append([*path[path.index(dep) :], dep])
            elif dep not in state:
                visit(dep, [*path, dep])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, [" -> ".join(c) for c in cycles]


def test_the_parser_sees_lazy_and_relative_imports() -> None:
    """So the rules above can fail: an import inside a function and a relative one both count."""
    source = "def f():\n    from engine.data import clip\nfrom . import stats\n"
    modules = {"engine.data", "engine.data.clip", "engine.streaming.stats", "engine.streaming.input"}
    found = _imports(source, "engine.streaming.input", "engine.streaming", modules)
    assert found == {"engine.data", "engine.data.clip", "engine.streaming.stats"}


def test_the_installed_packages_are_the_checked_ones() -> None:
    """What `pip install` puts on sys.path is exactly what these rules check, and no top-level
    name is a generic word another project owns (`kernels`, `bench`)."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    include = setuptools["packages"]["find"]["include"]
    assert sorted(name.rstrip("*") for name in include) == sorted(PACKAGES)
    assert not {"kernels", "bench"} & {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists()}
