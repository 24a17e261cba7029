"""The package's layers point one way: cli -> commands -> trainer, recipe.load -> components -> recipe -> errors.

Read from the source with `ast` (every import, also those inside functions), so a lazy import
cannot hide a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "accel_trainer"

# Lower index = lower layer. A module may import its own layer or lower ones, never higher. A module
# is in the layer of its longest listed name: `recipe.load` sits above the rest of `recipe`.
LAYERS: list[set[str]] = [
    {"errors", "files"},  # RecipeError, atomic writes
    {"recipe"},  # reading and the typed sections
    {"log", "classes", "plotting"},  # leaves every component may use
    {"progress", "checkpoint", "data", "optim", "schedules", "loop"},  # one concern each, unaware of each other
    {"tasks", "distributed"},  # models and loaders, built from data/ and checkpoint/
    {"hooks", "predict"},  # stage hooks; inference on a task's model
    {"onnx_export"},  # graphs checked against predict
    {"recipe.load", "trainer"},  # the loop, and a recipe checked for it
    {"commands"},
    {"cli", "__main__"},
]


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Package modules `name` imports, outside `if TYPE_CHECKING:` blocks."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()

    class Visitor(ast.NodeVisitor):
        def visit_If(self, node: ast.If) -> None:
            if "TYPE_CHECKING" in ast.unparse(node.test):
                for child in node.orelse:
                    self.visit(child)
                return
            self.generic_visit(node)

        def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
            if node.level == 0:
                if not (node.module or "").startswith("accel_trainer"):
                    return
                base = node.module.split(".")[1:]
            else:
                base = package[: len(package) - node.level + 1] + (node.module.split(".") if node.module else [])
            for alias in node.names:
                full = ".".join([*base, alias.name])
                found.add(full if full in modules else ".".join(base))

        def visit_Import(self, node: ast.Import) -> None:
            for alias in node.names:
                if alias.name.startswith("accel_trainer."):
                    found.add(alias.name.split(".", 1)[1])

    Visitor().visit(ast.parse(path.read_text(encoding="utf-8")))
    return {m for m in found if m in modules and m != name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _layer(module: str) -> int:
    parts = module.split(".")
    for name in (".".join(parts[:n]) for n in range(len(parts), 0, -1)):
        for index, layer in enumerate(LAYERS):
            if name in layer:
                return index
    raise AssertionError(f"accel_trainer.{module} is in no layer; add its top-level name to LAYERS")


def test_every_import_points_down_or_sideways():
    wrong = [
        f"accel_trainer.{m} (layer {_layer(m)}) imports accel_trainer.{d} (layer {_layer(d)})"
        for m, deps in _graph().items()
        if m
        for d in deps
        if d and _layer(d) > _layer(m)
    ]
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles():
    graph = {m: deps for m, deps in _graph().items() if m}  # the package facade imports lazily, by name
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                cycles.append(trail[trail.index(dep) :] + [dep])
            elif dep not in state:
                visit(dep, [*trail, dep])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_check_itself_sees_lazy_imports(tmp_path):
    """An import inside a function counts (the old schema -> hooks cycle was such an import)."""
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from .hooks import build_hooks\n")
    assert "hooks" in _imports("recipe", source, {"recipe": source, "hooks": source})


def test_components_have_floors_of_their_own():
    """`data -> hooks` or `checkpoint -> tasks` would be an upward import, not a sideways one."""
    assert _layer("data") < _layer("tasks") < _layer("hooks") < _layer("trainer")
    assert _layer("checkpoint") < _layer("tasks") and _layer("loop") < _layer("trainer")
