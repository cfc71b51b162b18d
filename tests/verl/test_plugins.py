"""The plugins: entry points declared and installed, verl's plugin active in a fresh verl process, the vLLM plugin's
switch and cache reset, and the lazy model reference it registers."""

import ast
import importlib.metadata
import os
import subprocess
import sys

import pytest
import tomllib

from skinflow.verl import ENTRY_POINTS
from tests import REPO

CHECK = """
import verl
import verl.utils.fsdp_utils as fsdp_utils
import verl.workers.engine.fsdp.transformer_impl as engine
import verl.models.transformers.qwen2_vl as qwen2_vl
import verl.models.transformers.monkey_patch as monkey_patch
import verl.workers.config.model as model_config
from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl as qwen
assert getattr(qwen.Qwen2_5_VisionTransformerPretrainedModel.__init__, "_skinflow_dve", False), "DVE not registered"
for function in (fsdp_utils.apply_fsdp2, engine.apply_fsdp2, qwen2_vl._get_input_embeds, model_config.hf_processor):
    assert getattr(function, "_skinflow_dve", False), function.__module__ + "." + function.__name__
assert monkey_patch.is_trl_available.__module__ == "skinflow.verl.plugin"
print("active")
"""


def _run(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300,
                          env={**os.environ, **env})


def test_pyproject_declares_the_entry_points():
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"].get("entry-points", {})
    for group, (name, value) in ENTRY_POINTS.items():
        assert declared.get(group, {}).get(name) == value, f'pyproject.toml: [project.entry-points."{group}"] ' \
                                                           f'{name} = "{value}" is missing'


@pytest.mark.parametrize("group", list(ENTRY_POINTS))
def test_installed_entry_points_resolve(group):
    name, value = ENTRY_POINTS[group]
    points = {point.name: point for point in importlib.metadata.entry_points(group=group)}
    assert name in points and points[name].value == value, f"{group}: {sorted(points)} (reinstall the package)"
    assert callable(points[name].load())


def test_verl_plugin_is_active_through_verls_external_modules():
    """verl imports VERL_USE_EXTERNAL_MODULES (like actor_rollout_ref.model.external_lib) in every process."""
    result = _run(CHECK, VERL_USE_EXTERNAL_MODULES="skinflow.verl.plugin", VERL_USE_EXTERNAL_PLUGINS="none")
    assert result.returncode == 0 and result.stdout.strip().endswith("active"), result.stderr[-3000:]


def test_verl_plugin_is_active_through_the_entry_point_alone():
    result = _run(CHECK, VERL_USE_EXTERNAL_PLUGINS="auto")
    assert result.returncode == 0 and result.stdout.strip().endswith("active"), result.stderr[-3000:]


def test_without_the_plugin_nothing_is_patched():
    """The check above can fail: with plugins off and no external module, verl runs unpatched."""
    result = _run(CHECK, VERL_USE_EXTERNAL_PLUGINS="none")
    assert result.returncode != 0 and "AssertionError: DVE not registered" in result.stderr


def test_vllm_plugin_switch(monkeypatch):
    from skinflow.verl import vllm_plugin

    monkeypatch.setenv("SKINFLOW_VLLM_PLUGIN", "0")
    assert vllm_plugin.register() is False
    monkeypatch.setenv("SKINFLOW_VLLM_PLUGIN", "yes")
    with pytest.raises(ValueError, match="SKINFLOW_VLLM_PLUGIN must be 0 or 1"):
        vllm_plugin.register()


def test_the_registered_model_reference_names_a_class_of_that_module():
    from skinflow.verl.vllm_plugin import ARCHITECTURE, MODEL_CLASS

    module, name = MODEL_CLASS.split(":")
    tree = ast.parse((REPO / (module.replace(".", "/") + ".py")).read_text())
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    assert name in classes and ARCHITECTURE == "Qwen2_5_VLForConditionalGeneration"
    methods = {node.name for node in classes[name].body if isinstance(node, ast.FunctionDef)}
    assert {"__init__", "load_weights"} <= methods


def test_reset_image_caches_calls_the_engine(monkeypatch):
    from skinflow.verl.vllm_plugin import reset_image_caches

    calls = []

    class Engine:
        def reset_encoder_cache(self):
            calls.append("encoder")

    class LLM:
        llm_engine = Engine()

        def reset_prefix_cache(self):
            calls.append("prefix")

        def reset_mm_cache(self):
            calls.append("mm")

    assert reset_image_caches(LLM()) == ["reset_prefix_cache", "reset_mm_cache", "reset_encoder_cache"]
    assert calls == ["prefix", "mm", "encoder"]
    with pytest.raises(TypeError, match="vLLM engine"):
        reset_image_caches(object())
