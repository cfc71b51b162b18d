"""skinflow.verl.vllm_model's own code, on a stand-in for vLLM's base class (vLLM cannot be imported on the CPU):
the DVE MLPs installed from the config, ``load_weights`` loading every DVE tensor by name and handing every other
one to the base class's loader, the returned names, the vision-sync count, and an unknown DVE name refused.

The stand-in (``FakeVllmQwen``) has vLLM's interface as the plugin uses it: ``__init__(*, vllm_config, prefix)``
setting ``config`` and ``visual`` (here the HF tower of the tiny model without DVE: vLLM's ``blocks[i].mlp`` layout),
and ``load_weights(weights) -> set[str]``, which records what it was given. What vLLM's real loader does with the
names it gets is the subject of test_names.py."""

import importlib
import sys
import types

import pytest
import torch

from skinflow.verl.names import vllm_name


class FakeVllmQwen(torch.nn.Module):
    received: list[str]

    def __init__(self, *, vllm_config, prefix: str = "") -> None:
        super().__init__()
        from skinflow.model import tiny

        plain, _ = tiny.build(dve=False)
        self.config = vllm_config.model_config.hf_config
        self.visual = plain.model.visual
        self.received = []

    def load_weights(self, weights):
        loaded = set()
        for name, _tensor in weights:
            self.received.append(name)
            loaded.add(vllm_name(name))
        return loaded


@pytest.fixture
def model_class(monkeypatch):
    modules = {}
    for name in ("vllm", "vllm.model_executor", "vllm.model_executor.models",
                 "vllm.model_executor.models.qwen2_5_vl"):
        modules[name] = types.ModuleType(name)
    modules["vllm.model_executor.models.qwen2_5_vl"].Qwen2_5_VLForConditionalGeneration = FakeVllmQwen
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.delitem(sys.modules, "skinflow.verl.vllm_model", raising=False)
    module = importlib.import_module("skinflow.verl.vllm_model")
    yield module.SkinFlowQwen2_5_VLForConditionalGeneration
    sys.modules.pop("skinflow.verl.vllm_model", None)


def _vllm_config(config):
    return types.SimpleNamespace(model_config=types.SimpleNamespace(hf_config=config))


def test_dve_mlps_installed_and_weights_routed(model_class, tiny_dir):
    from safetensors.torch import load_file

    from skinflow.model import load_pretrained
    from skinflow.verl.vision import DVEVisionMLP

    reference = load_pretrained(tiny_dir)
    model = model_class(vllm_config=_vllm_config(reference.config))
    assert [type(b.mlp) is DVEVisionMLP for b in model.visual.blocks] == [False, False, True, True]
    weights = load_file(str(tiny_dir / "model.safetensors"))
    loaded = model.load_weights(iter(weights.items()))
    dve = {name for name in weights if ".blocks.2.mlp." in name or ".blocks.3.mlp." in name}
    assert dve and set(model.received) == set(weights) - dve  # everything else went to vLLM's loader
    assert loaded == {vllm_name(name) for name in weights}
    params = dict(model.named_parameters())
    for name in dve:
        assert torch.equal(params[vllm_name(name)], weights[name]), name
    assert model.vision_weight_syncs == 1
    model.load_weights([("model.language_model.norm.weight", weights["model.norm.weight"])])
    assert model.vision_weight_syncs == 1  # a sync that does not touch the vision tower
    model.load_weights([(next(iter(dve)), weights[next(iter(dve))])])
    assert model.vision_weight_syncs == 2
    with pytest.raises(KeyError, match="no such parameter in the DVE vision MLP"):
        model.load_weights([("model.visual.blocks.2.mlp.gate_proj.weight", torch.zeros(1))])


def test_without_dve_the_base_class_loads_everything(model_class):
    from skinflow.model import tiny

    plain, _ = tiny.build(dve=False)
    model = model_class(vllm_config=_vllm_config(plain.config))
    assert model.dve_plan is None
    names = [("visual.blocks.2.mlp.up_proj.weight", torch.zeros(1))]
    assert model.load_weights(names) == {"visual.blocks.2.mlp.up_proj.weight"}
    assert model.received == ["visual.blocks.2.mlp.up_proj.weight"]
