"""The Dynamic Vision Encoder in a small random Qwen2.5-VL: exact at init, one image = one sample, save/load."""

import numpy as np
import pytest
import torch
from transformers import AutoModelForImageTextToText, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

import skinflow  # noqa: F401  (registers the DVE with transformers)
from skinflow.model.dve import DVELinear, apply_dve, load_pretrained

PATCH = 4
PIXELS_PER_PATCH = 3 * 2 * PATCH * PATCH  # channels x temporal patch x patch x patch


def small_model() -> Qwen2_5_VLForConditionalGeneration:
    torch.manual_seed(0)
    config = Qwen2_5_VLConfig(
        vision_config=dict(depth=4, hidden_size=32, intermediate_size=48, num_heads=2, out_hidden_size=32,
                           fullatt_block_indexes=[1, 3], window_size=16, patch_size=PATCH, spatial_merge_size=2,
                           temporal_patch_size=2),
        text_config=dict(hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=1, vocab_size=512, rope_scaling={"type": "mrope", "mrope_section": [2, 1, 1]}),
        image_token_id=500, video_token_id=501, vision_start_token_id=502, eos_token_id=0,
    )
    return Qwen2_5_VLForConditionalGeneration(config).eval()


def images(*grids: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Random pixel patches for images of the given (t, h, w) patch grids, packed like the processor does."""
    grid_thw = torch.tensor(grids)
    gen = torch.Generator().manual_seed(1)
    return torch.randn(int(grid_thw.prod(-1).sum()), PIXELS_PER_PATCH, generator=gen), grid_thw


def tower_output(model, pixels, grid_thw) -> torch.Tensor:
    with torch.no_grad():
        return model.model.visual(pixels, grid_thw=grid_thw).pooler_output


def randomize_modulation(model) -> None:
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, DVELinear):
                for head in module.KSM_Global.heads():
                    head.weight.normal_(0, 0.5)
                    head.bias.normal_(0, 0.5)


def test_exact_at_init_and_default_layers():
    model = small_model()
    pixels, grid = images((1, 8, 8), (1, 4, 8))
    before = tower_output(model, pixels, grid)
    apply_dve(model)
    tower = model.model.visual
    converted = {(i, n) for i, b in enumerate(tower.blocks) for n, m in b.named_modules() if isinstance(m, DVELinear)}
    assert converted == {(i, f"mlp.{p}") for i in (2, 3) for p in ("gate_proj", "up_proj", "down_proj")}
    after = tower_output(model, pixels, grid)
    assert (after - before).abs().max() <= 1e-5 * before.abs().max()
    assert tower.config.dve == {"blocks": [2, 3], "projections": ["gate_proj", "up_proj", "down_proj"], "num_bases": 4}


def test_each_image_is_one_sample():
    model = apply_dve(small_model(), blocks=[0, 1, 2, 3], projections=["qkv", "proj", "up_proj", "down_proj"])
    randomize_modulation(model)
    pixels, grid = images((1, 8, 8), (1, 4, 8), (1, 8, 4))
    together = tower_output(model, pixels, grid)
    token_counts = grid.prod(-1).tolist()
    merged_counts = [n // 4 for n in token_counts]
    starts = torch.tensor([0, *token_counts]).cumsum(0)
    merged_starts = torch.tensor([0, *merged_counts]).cumsum(0)
    for i in range(len(grid)):
        alone = tower_output(model, pixels[starts[i] : starts[i + 1]], grid[i : i + 1])
        torch.testing.assert_close(together[merged_starts[i] : merged_starts[i + 1]], alone, rtol=1e-5, atol=1e-5)
    # the modulation is active: an image changes another image's output if boundaries were ignored
    plain = small_model()
    assert not torch.allclose(tower_output(plain, pixels, grid), together, atol=1e-3)


def test_idempotent_and_merging_settings():
    model = apply_dve(small_model(), blocks=[3])
    layer = model.model.visual.blocks[3].mlp.up_proj
    apply_dve(model, blocks=[3])
    assert model.model.visual.blocks[3].mlp.up_proj is layer
    apply_dve(model, blocks=[1], projections=["qkv"])
    assert isinstance(model.model.visual.blocks[1].attn.qkv, DVELinear)
    assert model.config.vision_config.dve["blocks"] == [1, 3]


def test_bad_arguments():
    model = small_model()
    with pytest.raises(ValueError, match="projections"):
        apply_dve(model, projections=["o_proj"])
    with pytest.raises(ValueError, match="blocks"):
        apply_dve(model, blocks=[7])
    with pytest.raises(ValueError, match="num_bases"):
        apply_dve(model, num_bases=0)
    with pytest.raises(TypeError, match="vision tower"):
        apply_dve(torch.nn.Linear(2, 2))
    with pytest.raises(RuntimeError, match="per-image boundaries"):
        apply_dve(model).model.visual.blocks[3].mlp.up_proj(torch.randn(4, 32))


def test_save_and_load_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = apply_dve(small_model(), num_bases=2)
    randomize_modulation(model)
    pixels, grid = images((1, 8, 8), (1, 4, 4))
    expected = tower_output(model, pixels, grid)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    for loader in (load_pretrained, Qwen2_5_VLForConditionalGeneration.from_pretrained,
                   AutoModelForImageTextToText.from_pretrained):
        loaded = loader(tmp_path).eval()
        assert loaded.config.model_type == "qwen2_5_vl"
        assert isinstance(loaded.model.visual.blocks[2].mlp.down_proj, DVELinear)
        torch.testing.assert_close(tower_output(loaded, pixels, grid), expected)
    with pytest.raises(FileNotFoundError, match="not a checkpoint directory"):
        load_pretrained(tmp_path / "missing")


@pytest.mark.parametrize("use_reentrant", [False, True])
def test_gradient_checkpointing_recomputes_with_each_forwards_own_images(use_reentrant):
    """Recomputation in backward uses the images of the forward it belongs to, even after another forward."""
    pixels_a, grid_a = images((1, 8, 8), (1, 4, 8))
    pixels_b, grid_b = images((1, 4, 8), (1, 8, 8))  # same token count, other image boundaries
    reference = apply_dve(small_model(), blocks=[0, 1, 2, 3]).train()
    randomize_modulation(reference)
    reference.model.visual(pixels_a, grid_thw=grid_a).pooler_output.square().sum().backward()
    expected = {name: p.grad.clone() for name, p in reference.named_parameters() if p.grad is not None}

    model = apply_dve(small_model(), blocks=[0, 1, 2, 3]).train()
    model.load_state_dict(reference.state_dict())
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": use_reentrant})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": use_reentrant})
    assert model.model.visual.blocks[0].gradient_checkpointing
    loss_a = model.model.visual(pixels_a, grid_thw=grid_a).pooler_output.square().sum()
    model.model.visual(pixels_b, grid_thw=grid_b)  # a second forward before the first backward
    loss_a.backward()
    for name, p in model.named_parameters():
        if name in expected:
            torch.testing.assert_close(p.grad, expected[name], msg=name)


@pytest.mark.parametrize(
    "arguments, error, message",
    [
        (dict(projections="qkv"), TypeError, "not 'qkv'"),  # a str is not taken as the letters q, k, v
        (dict(projections=b"qkv"), TypeError, "projections"),
        (dict(projections=[]), ValueError, "projections"),
        (dict(projections=["qkv", 3]), ValueError, "projections"),
        (dict(blocks="23"), TypeError, "blocks"),
        (dict(blocks=3), TypeError, "blocks"),
        (dict(blocks=True), TypeError, "blocks"),
        (dict(blocks=[True]), TypeError, "blocks"),
        (dict(blocks=[2.0]), TypeError, "blocks"),
        (dict(blocks=[-1]), ValueError, "blocks"),
        (dict(blocks=[]), ValueError, "blocks"),
        (dict(num_bases=True), TypeError, "num_bases"),
        (dict(num_bases=4.0), TypeError, "num_bases"),
        (dict(num_bases="4"), TypeError, "num_bases"),
        (dict(num_bases=-2), ValueError, "num_bases"),
    ],
)
def test_argument_types_are_checked_before_any_change(arguments, error, message):
    model = small_model()
    with pytest.raises(error, match=message):
        apply_dve(model, **arguments)
    assert not any(isinstance(m, DVELinear) for m in model.modules())
    assert not getattr(model.config.vision_config, "dve", None)


def test_numpy_integers_are_ints_and_one_k_per_model(tmp_path):
    model = apply_dve(small_model(), blocks=np.array([2, 3]), num_bases=np.int64(2))
    settings = model.config.vision_config.dve
    assert settings == {"blocks": [2, 3], "projections": ["gate_proj", "up_proj", "down_proj"], "num_bases": 2}
    assert all(type(b) is int for b in settings["blocks"]) and type(settings["num_bases"]) is int
    model.save_pretrained(tmp_path)  # the config is JSON: numpy integers would not serialise
    apply_dve(model, blocks=[1])  # num_bases defaults to the model's K
    assert model.model.visual.blocks[1].mlp.up_proj.num_bases == 2
    with pytest.raises(ValueError, match="num_bases must be the K of the model's existing DVE layers"):
        apply_dve(model, blocks=[0], num_bases=4)  # the config records one K: a reload would not fit


def test_bad_dve_settings_in_a_config_are_a_clear_error():
    config = small_model().config
    config.vision_config.dve = {"blocks": [9], "projections": ["up_proj"], "num_bases": 2}
    with pytest.raises(ValueError, match=r"config.vision_config.dve: blocks .*\[9\]"):
        Qwen2_5_VLForConditionalGeneration(config)
    config.vision_config.dve = {"blocks": [1], "projections": "qkv", "num_bases": 2}
    with pytest.raises(ValueError, match="config.vision_config.dve: projections"):
        Qwen2_5_VLForConditionalGeneration(config)
