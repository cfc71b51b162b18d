"""skinflow's layers only point down (docs/design.md): each module imports only modules of its own layer or the
layers before it, and the pure-Python layers load no torch, transformers or PIL."""

import ast
import subprocess
import sys

import pytest

from tests import REPO

PACKAGE = REPO / "skinflow"
LAYERS = {"formats": 1, "taxonomy": 1, "targets": 1, "util": 1, "data": 2, "model": 3, "rewards": 4, "train": 4,
          "eval": 4, "analysis": 4, "experiments": 4, "verl": 4, "cli": 5}
PURE = ("skinflow", "skinflow.formats", "skinflow.taxonomy", "skinflow.targets", "skinflow.util", "skinflow.rewards",
        "skinflow.verl")
HEAVY = ("torch", "transformers", "PIL", "numpy", "rich")


def _part(module: str) -> str:
    """The layer name of a dotted skinflow module (``skinflow.data.records`` -> ``data``)."""
    return module.split(".")[1]


def _skinflow_imports(path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] if node.module != "skinflow" else [f"skinflow.{a.name}" for a in node.names]
            found.update(name for name in names if name.startswith("skinflow."))
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("skinflow."))
    return found


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(REPO).with_suffix("")
        parts = relative.parts
        if len(parts) == 2 and parts[1] == "__init__":
            continue  # the package's lazy entry points name the model layer by design
        yield ".".join(parts if parts[-1] != "__init__" else parts[:-1]), path


@pytest.mark.parametrize(("module", "path"), list(_modules()), ids=lambda value: str(value))
def test_imports_point_down(module, path):
    layer = LAYERS[_part(module)]
    upward = sorted(name for name in _skinflow_imports(path) if LAYERS[_part(name)] > layer)
    assert not upward, f"{module} (layer {layer}) imports {upward}"


def test_every_top_level_module_has_a_layer():
    names = {path.stem if path.is_file() else path.name for path in PACKAGE.iterdir()
             if (path.suffix == ".py" and path.stem != "__init__") or (path.is_dir() and (path / "__init__.py").exists())}
    assert names <= set(LAYERS), sorted(names - set(LAYERS))


@pytest.mark.parametrize("module", PURE)
def test_pure_layers_load_nothing_heavy(module):
    code = f"import sys, {module}; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]", f"import {module} loaded {result.stdout.strip()}"


def test_the_model_layer_registers_with_transformers_when_used():
    code = ("import sys, skinflow\n"
            "from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl as qwen\n"
            "init = qwen.Qwen2_5_VisionTransformerPretrainedModel.__init__\n"
            "assert not getattr(init, '_skinflow_dve', False), 'registered by import skinflow alone'\n"
            "skinflow.apply_dve  # the model layer, on first use\n"
            "assert qwen.Qwen2_5_VisionTransformerPretrainedModel.__init__._skinflow_dve\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
