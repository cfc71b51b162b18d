"""The name mapping between an HF DVE checkpoint and vLLM's Qwen2.5-VL with the DVE plugin is complete and
one-to-one: every vLLM parameter (every shard of a stacked one) is loaded exactly once, from a tensor of its shape,
and no HF tensor is left over. The vLLM side is skinflow.verl.names.vllm_layout, written from vLLM's source
(vLLM cannot be imported on these CPU machines: docs/verl.md)."""

import pytest
import torch
from safetensors import safe_open

from skinflow.verl.names import DVEPlan, Target, map_checkpoint, vllm_layout, vllm_target


def _shapes(state) -> dict:
    return {name: tuple(tensor.shape) for name, tensor in state.items()}


def _file_shapes(path) -> dict:
    with safe_open(str(path), framework="pt") as opened:
        return {name: tuple(opened.get_slice(name).get_shape()) for name in opened.keys()}


def _assert_complete(report):
    assert report.ok, (report.unknown[:5], report.twice[:5], report.missing[:5], report.wrong_shape[:5])
    assert all(len(names) == 1 for names in report.loaded.values())


def test_checkpoint_names_map_one_to_one(tiny_dir):
    from skinflow.model import load_pretrained

    config = load_pretrained(tiny_dir).config
    report = map_checkpoint(_file_shapes(tiny_dir / "model.safetensors"), config)
    _assert_complete(report)
    assert not report.skipped  # the file holds no tied lm_head
    assert ("visual.blocks.2.mlp.gate_proj.dft_weight", None) in report.loaded
    assert report.loaded[("visual.blocks.0.mlp.gate_up_proj.weight", 1)] == ["visual.blocks.0.mlp.up_proj.weight"]


def test_weight_sync_names_map_one_to_one(tiny_dir):
    """The actor's runtime state-dict names (what verl sends at every sync) map too; the tied lm_head is skipped."""
    from skinflow.model import load_pretrained

    model = load_pretrained(tiny_dir)
    state = model.state_dict()
    assert any(name.startswith("model.visual.") for name in state)
    report = map_checkpoint(_shapes(state), model.config)
    _assert_complete(report)
    assert set(report.skipped) <= {"lm_head.weight"}
    layout = vllm_layout(model.config)
    assert sum(len(shards) for shards in layout.values()) == len(report.loaded)


def test_model_without_dve_maps_with_vllms_stacking():
    from skinflow.model import tiny

    model, _ = tiny.build(dve=False)
    report = map_checkpoint(_shapes(model.state_dict()), model.config)
    _assert_complete(report)
    assert not any("dft_weight" in name for name, _ in report.loaded)


def test_the_check_finds_a_missing_a_double_and_a_foreign_tensor(tiny_dir):
    from skinflow.model import load_pretrained

    model = load_pretrained(tiny_dir)
    shapes = _file_shapes(tiny_dir / "model.safetensors")
    missing = dict(shapes)
    del missing["visual.blocks.3.mlp.up_proj.KSM_Global.fc.weight"]
    assert map_checkpoint(missing, model.config).missing == [("visual.blocks.3.mlp.up_proj.KSM_Global.fc.weight", None)]
    double = dict(shapes) | {"model.visual.blocks.0.norm1.weight": shapes["visual.blocks.0.norm1.weight"]}
    assert map_checkpoint(double, model.config).twice == [("visual.blocks.0.norm1.weight", None)]
    foreign = dict(shapes) | {"visual.blocks.0.mlp.up_proj.dft_weight": (3, 3)}  # a DVE name in a plain block
    assert map_checkpoint(foreign, model.config).unknown == ["visual.blocks.0.mlp.up_proj.dft_weight"]
    bad_shape = dict(shapes) | {"visual.merger.ln_q.weight": (7,)}
    assert map_checkpoint(bad_shape, model.config).wrong_shape[0][0] == "visual.merger.ln_q.weight"


def test_qwen2_5_vl_7b_layout_with_dve_maps_one_to_one():
    """The 7B model's names and shapes (built on the meta device, DVE in a first and a last block: both MLP shapes)
    against the vLLM layout."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from skinflow.model import apply_dve

    config = Qwen2_5_VLConfig(
        vision_config=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                           fullatt_block_indexes=[7, 15, 23, 31]),
        text_config=dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                         num_attention_heads=28, num_key_value_heads=4, rope_scaling={"type": "mrope",
                                                                                      "mrope_section": [16, 24, 24]}),
        tie_word_embeddings=False,
    )
    with torch.device("meta"):
        model = Qwen2_5_VLForConditionalGeneration(config)
        apply_dve(model, blocks=[16, 31])
    report = map_checkpoint(_shapes(model.state_dict()), model.config)
    _assert_complete(report)
    assert not report.skipped and ("language_model.lm_head.weight", None) in report.loaded
    assert DVEPlan.from_config(model.config).blocks == (16, 31)
    assert ("visual.blocks.31.mlp.down_proj.dft_weight", None) in report.loaded


def test_plan_refuses_attention_projections_for_vllm():
    config = {"vision_config": {"depth": 4, "dve": {"blocks": [2], "projections": ["qkv"], "num_bases": 4}}}
    with pytest.raises(ValueError, match=r"config.vision_config.dve: .*model_impl=transformers"):
        DVEPlan.from_config(config)


def test_targets_of_single_names():
    plan = DVEPlan(depth=4, blocks=(2, 3), projections=("gate_proj", "up_proj", "down_proj"), num_bases=4)
    assert vllm_target("model.visual.blocks.2.mlp.gate_proj.dft_weight", plan, True) == \
        Target("visual.blocks.2.mlp.gate_proj.dft_weight")
    assert vllm_target("model.visual.blocks.1.mlp.gate_proj.weight", plan, True) == \
        Target("visual.blocks.1.mlp.gate_up_proj.weight", 0)
    assert vllm_target("model.language_model.layers.0.self_attn.k_proj.bias", plan, True) == \
        Target("language_model.model.layers.0.self_attn.qkv_proj.bias", "k")
    assert vllm_target("lm_head.weight", plan, True).skip is not None
    assert vllm_target("lm_head.weight", plan, False) == Target("language_model.lm_head.weight")
