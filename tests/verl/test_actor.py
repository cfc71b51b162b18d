"""The DVE in verl's FSDP actor: verl's own model construction from a DVE checkpoint (with the plugin as
external_lib), the processor verl builds, the dummy-image batches of verl's Qwen2.5-VL forward, per-image DVE
samples, and FSDP2 with verl's bf16 policy keeping the DVE parameters float32 (a one-process gloo group)."""

import json
import subprocess
import sys

import pytest
import torch

from tests import REPO
from tests.verl.images import prompt_inputs


@pytest.fixture(scope="module")
def actor(tiny_dir):
    """``(model, model_config)`` as verl's FSDP engine builds them (``FSDPEngine._build_module``)."""
    from verl.workers.config import FSDPEngineConfig, HFModelConfig
    from verl.workers.engine.fsdp.transformer_impl import FSDPEngine

    model_config = HFModelConfig(path=str(tiny_dir), external_lib="skinflow.verl.plugin",
                                 override_config={"attn_implementation": "sdpa"}, use_remove_padding=False,
                                 enable_gradient_checkpointing=False)
    engine = FSDPEngine.__new__(FSDPEngine)  # only the model-building part: the engine's __init__ needs CUDA
    engine.model_config = model_config
    engine.engine_config = FSDPEngineConfig(strategy="fsdp2", use_torch_compile=False)
    engine.device_mesh, engine.use_remove_padding, engine.ulysses_sequence_parallel_size = None, False, 1
    return engine._build_module(), model_config


def test_verl_builds_the_dve_model_from_a_dve_checkpoint(actor, tiny_dir):
    from skinflow.model import load_pretrained
    from skinflow.model.dve import DVELinear

    model, model_config = actor
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    dve = {name for name, module in model.named_modules() if isinstance(module, DVELinear)}
    assert dve == {f"model.visual.blocks.{b}.mlp.{p}" for b in (2, 3) for p in ("gate_proj", "up_proj", "down_proj")}
    reference = load_pretrained(tiny_dir).state_dict()  # skinflow's strict loader: every tensor from the file
    state = model.state_dict()
    assert set(state) == set(reference)
    for name, tensor in reference.items():
        assert state[name].dtype == torch.float32 and torch.equal(state[name], tensor), name
    assert model_config.hf_config.vision_config.dve["blocks"] == [2, 3]


def test_the_actor_builds_with_the_installed_trl():
    """verl's monkey patch imports TRL's value-head class only where it exists (TRL 1.x has none)."""
    import trl
    import verl.models.transformers.monkey_patch as monkey_patch

    from skinflow.verl.plugin import trl_value_head_available

    assert monkey_patch.is_trl_available is trl_value_head_available
    assert trl_value_head_available() == (int(trl.__version__.split(".")[0]) < 1)


def test_verl_gets_the_image_only_processor_with_rope_index(actor):
    from skinflow.model.processor import ImageOnlyQwenVLProcessor

    _, model_config = actor
    assert isinstance(model_config.processor, ImageOnlyQwenVLProcessor)
    assert callable(model_config.processor.get_rope_index) and model_config.processor.config is not None


def test_text_only_batch_gets_the_dummy_image_through_the_dve(actor):
    """verl's Qwen2.5-VL forward on a batch without images (the plugin's fix of its dummy-image branch)."""
    import verl.models.transformers.qwen2_vl as verl_qwen

    _get_input_embeds = verl_qwen._get_input_embeds
    assert _get_input_embeds._skinflow_dve
    with pytest.raises(AttributeError, match="mean"):  # verl 0.9.1's own branch under transformers 5
        _get_input_embeds.__wrapped__(actor[0].model, torch.tensor([[5, 6]]), torch.ones(1, 2, dtype=torch.long))
    model, model_config = actor
    model.train()
    tokenizer = model_config.tokenizer
    ids = torch.tensor([tokenizer.encode("no image in this prompt")])
    embeds, _ = _get_input_embeds(model.model, ids, torch.ones_like(ids))  # verl patches Qwen2_5_VLModel.forward
    model.zero_grad()
    embeds.sum().backward()
    grads = [p.grad for n, p in model.named_parameters() if "mlp.up_proj.dft_weight" in n]
    assert len(grads) == 2 and all(g is not None and torch.all(g == 0) for g in grads)  # in the graph, weight 0


def test_dve_samples_are_images_in_verls_forward(actor):
    """Two images in one packed batch: each image's vision output equals that image alone."""
    model, model_config = actor
    model.eval()
    both = prompt_inputs(model_config.processor, 2)
    tokens = int(both["image_grid_thw"][0].prod())
    with torch.no_grad():
        packed = model.model.visual(both["pixel_values"], grid_thw=both["image_grid_thw"]).pooler_output
        first = model.model.visual(both["pixel_values"][:tokens], grid_thw=both["image_grid_thw"][:1]).pooler_output
        second = model.model.visual(both["pixel_values"][tokens:], grid_thw=both["image_grid_thw"][1:]).pooler_output
    torch.testing.assert_close(packed, torch.cat([first, second]), rtol=1e-5, atol=1e-6)


def test_fsdp2_with_verls_bf16_policy_keeps_the_dve_parameters_float32(tiny_dir):
    result = subprocess.run([sys.executable, "-m", "tests.verl.fsdp_check", str(tiny_dir), "29611"],
                            capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    patched, plain = (next(line for line in lines if line["mode"] == mode) for mode in ("patched", "unpatched"))
    assert patched["units"] == 6
    assert {entry["param"] for entry in patched["seen"].values()} == {"torch.float32"}
    assert {entry["input"] for entry in patched["seen"].values()} == {"torch.bfloat16"}
    assert patched["qkv"] == "torch.bfloat16"  # everything else keeps verl's policy
    assert all(dtype == "torch.float32" and total > 0 for dtype, total in patched["grads"].values())
    assert patched["changed"] > 0  # no_grad forwards follow an update of the DVE parameters
    # what verl alone does: the DVE parameters in bf16
    assert plain["units"] == 0 and {entry["param"] for entry in plain["seen"].values()} == {"torch.bfloat16"}
