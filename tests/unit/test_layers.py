"""The structure holds: dependencies point one way (client <- runtime <- tools), no import cycles, and the
processes and commands that must start light import no torch.

Imports are read from the source (module level and inside functions alike), so a lazy import that runs the
wrong way fails here too.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"vlm_client": ROOT / "client" / "vlm_client", "minivlm": ROOT / "minivlm",
            "vlm_tools": ROOT / "tools" / "vlm_tools"}
# Bottom to top: an area imports its own modules and areas of lower layers only.
LAYERS = (
    ("vlm_client",),
    ("minivlm.errors", "minivlm.onnx_sessions", "minivlm.c_library"),
    ("minivlm.processing",),
    ("minivlm.decoding", "minivlm.routing"),
    ("minivlm.model",),
    ("minivlm.serving",),
    ("minivlm.export", "minivlm.server"),
    ("minivlm.cli",),
    ("vlm_tools.router_training",),
    ("vlm_tools.demo", "vlm_tools.bench"),
    ("vlm_tools.cli",),
)
LAYER_OF = {area: rank for rank, areas in enumerate(LAYERS) for area in areas}


def _modules() -> dict[str, Path]:
    found = {}
    for package, root in PACKAGES.items():
        for path in root.rglob("*.py"):
            parts = [package, *path.relative_to(root).with_suffix("").parts]
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(module: str, path: Path) -> set[str]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            # `from pkg import name` imports the module pkg.name when there is one, else pkg itself
            names.update(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {name for name in names if name.split(".")[0] in PACKAGES}


def _runtime_nodes(tree: ast.AST):
    """Every node but those under `if TYPE_CHECKING:` (annotations only, never imported at run time)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            continue
        yield node
        yield from _runtime_nodes(node)


def _area(module: str) -> str:
    parts = module.split(".")
    return "vlm_client" if parts[0] == "vlm_client" else ".".join(parts[:2])


MODULES = _modules()
GRAPH = {module: _imports(module, path) for module, path in MODULES.items()}


def test_every_area_has_a_layer():
    areas = {_area(m) for m in GRAPH} - {"minivlm", "vlm_tools"}         # the package docstrings
    assert areas <= set(LAYER_OF), f"areas without a layer: {sorted(areas - set(LAYER_OF))}"


def test_dependencies_point_down_the_layers():
    wrong = sorted(f"{module} imports {target}" for module, targets in GRAPH.items() for target in targets
                   if _area(target) != _area(module) and _area(module) in LAYER_OF
                   and LAYER_OF.get(_area(target), -1) >= LAYER_OF[_area(module)])
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_the_runtime_never_imports_the_tools():
    wrong = sorted(f"{m} imports {t}" for m, ts in GRAPH.items() if m.startswith("minivlm")
                   for t in ts if t.startswith("vlm_tools"))
    assert not wrong


def test_no_import_cycles():
    edges = defaultdict(set)
    for module, targets in GRAPH.items():
        for target in targets:
            if target in GRAPH and target != module:
                edges[module].add(target)
    index, low, stack, on_stack, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(node):                                   # Tarjan's strongly connected components
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for other in edges[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(GRAPH):
        if module not in index:
            visit(module)
    assert not cycles, f"import cycles: {cycles}"


LIGHT = {
    # what runs in every light python-backend stub, the client, and `vlm` before a command runs
    "vlm_client": "import vlm_client, vlm_client.cli",
    "generator forwarder": "import minivlm.serving.config, minivlm.serving.engine_forwarder, "
                           "minivlm.serving.stub_processes",
    "onnx models": "import minivlm.serving.onnx_model, minivlm.routing.onnx_runtime",
    "vlm parser": "from minivlm.cli import build_parser; build_parser()",
}


@pytest.mark.parametrize("code", LIGHT.values(), ids=LIGHT.keys())
def test_light_entry_points_import_no_torch(code):
    check = f"{code}\nimport sys\nprint(sorted(m for m in ('torch', 'transformers', 'matplotlib') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", out.stdout


def test_vlm_works_without_the_tools_installed(monkeypatch):
    """The GPU image installs no vlm_tools: its declared commands are skipped, the runtime's remain."""
    import argparse

    from minivlm import cli

    class Missing:
        def load(self):
            raise ModuleNotFoundError("No module named 'vlm_tools'")

    monkeypatch.setattr(cli, "entry_points", lambda group: [Missing()])
    commands = cli.build_parser()._subparsers._group_actions[0].choices
    assert {"export", "serve", "ask", "route", "top"} <= set(commands) and "demo" not in commands
    assert isinstance(commands["export"], argparse.ArgumentParser)
