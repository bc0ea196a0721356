"""The package's layers point one way: every import in src/lamina (module level or inside a
function, parsed with `ast`) goes to its own package or a lower layer, no modules import each
other round a circle, every file opens with a docstring, and the README's layout is the tree."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "lamina"

# Bottom to top. A unit is a sub-package of lamina, or a top-level module; the core modules
# share layer 0. A new package or top-level module must be placed here before it can pass.
LAYERS = (
    ("lamina", "lamina.errors", "lamina.fsio", "lamina.console", "lamina.workspace", "lamina.recipe",
     "lamina.recipe_doc", "lamina.rundir", "lamina.gates", "lamina.names", "lamina.progress", "lamina.quiet",
     "lamina.faults"),
    ("lamina.governance",),
    ("lamina.data",),
    ("lamina.registry",),
    ("lamina.models",),
    ("lamina.methods",),
    ("lamina.train",),
    ("lamina.eval",),
    ("lamina.rollout",),
    ("lamina.serve",),
    ("lamina.demo",),
    ("lamina.cli",),
    ("lamina.__main__",),  # `python -m lamina`: the CLI, e.g. under a user's torchrun
)
LAYER_OF = {unit: i for i, units in enumerate(LAYERS) for unit in units}
CORE = "core"
LAYER_OF[CORE] = 0


def module_files(root: Path = SRC) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under `root` (a package named by its __init__)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imports_of(module: str, is_package: bool, source: str, known: set[str]) -> set[str]:
    """The known modules `source` imports, anywhere in it. `from P import x` counts as
    importing P.x when that is a module, else P itself; relative imports are resolved."""
    package = module if is_package else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import a.b.c` of a name inside a module
                target = target.rpartition(".")[0]
            if target and target != module:
                found.add(target)
    return found


def import_graph(root: Path = SRC) -> dict[str, set[str]]:
    files = module_files(root)
    known = set(files)
    return {m: imports_of(m, p.name == "__init__.py", p.read_text(encoding="utf-8"), known) for m, p in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def unit_of(module: str) -> str:
    """The package a module belongs to (`lamina.train` for lamina.train.objectives.dpo), or
    `core` for the core modules, which may import each other (the cycle test still applies)."""
    unit = ".".join(module.split(".")[:2])
    return CORE if unit in LAYERS[0] else unit


def test_the_graph_reader_sees_function_level_and_relative_imports():
    known = {"lamina", "lamina.a", "lamina.a.b", "lamina.c"}
    source = "from . import b\nfrom lamina import c\ndef f():\n    import lamina.a.b.name\n"
    assert imports_of("lamina.a", True, source, known) == {"lamina.a.b", "lamina.c"}
    assert imports_of("lamina.a.x", False, "from ..c import thing\n", known) == {"lamina.c"}
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_every_package_and_top_level_module_has_a_layer():
    units = {unit_of(m) for m in module_files()}
    assert units - set(LAYER_OF) == set(), "place these in LAYERS in tests/test_layers.py"


def test_imports_point_down_the_layers():
    upward = []
    for module, targets in import_graph().items():
        for target in targets:
            a, b = unit_of(module), unit_of(target)
            if a != b and LAYER_OF.get(b, -1) >= LAYER_OF.get(a, -1):
                upward.append(f"{module} -> {target} ({a} is layer {LAYER_OF.get(a)}, {b} is {LAYER_OF.get(b)})")
    assert upward == [], "imports that point up (or sideways) a layer:\n" + "\n".join(sorted(upward))


def test_no_import_cycles_between_packages_or_modules():
    graph = import_graph()
    packages: dict[str, set[str]] = {}
    for module, targets in graph.items():
        packages.setdefault(unit_of(module), set()).update(unit_of(t) for t in targets if unit_of(t) != unit_of(module))
    assert cycles(packages) == [], "packages importing each other round a circle"
    assert cycles(graph) == [], "modules importing each other round a circle"


@pytest.mark.parametrize("folder", ["src/lamina", "tests", "bench"])
def test_every_file_opens_with_a_docstring_saying_its_job(folder):
    missing = [str(p.relative_to(ROOT)) for p in sorted((ROOT / folder).rglob("*.py"))
               if not (ast.get_docstring(ast.parse(p.read_text(encoding="utf-8"))) or "").strip()]
    assert missing == []


def readme_layout(readme: str) -> set[str]:
    """Paths (relative to src/lamina; folders end in /) listed in the README's layout block."""
    section = readme.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```\n(.*?)```", section, re.S).group(1).splitlines()
    assert block[0].strip() == "src/lamina/", "the layout block starts at src/lamina/"
    listed, folders = set(), []
    for line in block[1:]:
        depth = (len(line) - len(line.lstrip(" "))) // 2
        name = line.split()[0]
        folders = folders[: depth - 1]
        listed.add("".join(folders) + name)
        if name.endswith("/"):
            folders.append(name)
    return listed


def test_readme_layout_lists_exactly_the_tree():
    listed = readme_layout((ROOT / "README.md").read_text(encoding="utf-8"))
    tree = set()
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC)
        if path.name not in ("__init__.py", "__main__.py"):
            tree.add(rel.as_posix())
        tree.update(f"{parent.as_posix()}/" for parent in rel.parents if parent != Path("."))
    assert sorted(tree - listed) == [], "in src/lamina but not in the README's layout section"
    assert sorted(listed - tree) == [], "in the README's layout section but not in src/lamina"
