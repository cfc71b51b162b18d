"""The DVE MLP of the vLLM plugin (skinflow.verl.vision) computes the HF DVE model's function per image from the
same weights: alone on vLLM's (tokens, 1, d) layout, and installed into a vision tower whose forward takes
``grid_thw`` (here the HF tower without DVE, which has vLLM's ``blocks[i].mlp`` / ``forward(x, grid_thw)`` shape;
vLLM passes ``grid_thw`` as a list, the HF tower needs a tensor, the plugin's hook takes both)."""

import torch

from skinflow.model.dve import DVELinear, ImageBoundaries
from skinflow.verl.names import DVEPlan
from skinflow.verl.vision import DVEVisionMLP, image_boundaries, install_dve
from tests.verl.images import prompt_inputs


def test_image_boundaries_from_a_list_or_a_tensor():
    assert image_boundaries([[1, 14, 14], [1, 4, 4]]).tolist() == [0, 196, 212]
    assert image_boundaries(torch.tensor([[2, 4, 6]])).dtype == torch.int32


def test_dve_mlp_equals_the_hf_dve_mlp_per_image(tiny_dir):
    from skinflow.model import load_pretrained

    model = load_pretrained(tiny_dir).eval()
    hf_mlp = model.model.visual.blocks[2].mlp
    vision = model.config.vision_config
    boundaries = ImageBoundaries()
    mlp = DVEVisionMLP(vision.hidden_size, vision.intermediate_size, vision.hidden_act,
                       ("gate_proj", "up_proj", "down_proj"), 4, boundaries, torch.float32)
    assert set(mlp.state_dict()) == set(hf_mlp.state_dict())
    mlp.load_state_dict(hf_mlp.state_dict(), strict=True)
    x = torch.randn(196 + 16, vision.hidden_size)
    cu = image_boundaries([[1, 14, 14], [1, 4, 4]])
    boundaries.cu_seqlens = cu
    hf_mlp.gate_proj.boundaries.cu_seqlens = cu  # the HF tower's boundaries object, as its pre-hook would set it
    with torch.no_grad():
        expected = hf_mlp(x)
        got = mlp(x.unsqueeze(1))
        boundaries.cu_seqlens = cu[:2]
        alone = mlp(x[:196].unsqueeze(1))
    hf_mlp.gate_proj.boundaries.cu_seqlens = None
    assert got.shape == (212, 1, vision.hidden_size)
    torch.testing.assert_close(got.squeeze(1), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(alone.squeeze(1), expected[:196], rtol=1e-5, atol=1e-6)  # per image: no leakage


def test_dve_mlp_keeps_float32_parameters_under_a_bf16_model():
    mlp = DVEVisionMLP(64, 128, "silu", ("up_proj",), 4, ImageBoundaries(), torch.bfloat16)
    assert isinstance(mlp.up_proj, DVELinear) and mlp.up_proj.dft_weight.dtype == torch.float32
    assert not isinstance(mlp.gate_proj, DVELinear) and mlp.gate_proj.weight.dtype == torch.bfloat16
    mlp.boundaries.cu_seqlens = image_boundaries([[1, 2, 4]])
    out = mlp(torch.randn(8, 1, 64, dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()


def test_installed_into_a_tower_it_reproduces_the_hf_dve_tower(tiny_dir):
    from skinflow.model import load_pretrained, tiny

    dve_model = load_pretrained(tiny_dir).eval()
    plain, processor = tiny.build(dve=False)
    tower = plain.model.visual
    plan = DVEPlan.from_config(dve_model.config)
    install_dve(tower, plan, dve_model.config.vision_config)
    result = tower.load_state_dict(dve_model.model.visual.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    inputs = prompt_inputs(processor, 2)
    with torch.no_grad():
        expected = dve_model.model.visual(inputs["pixel_values"], grid_thw=inputs["image_grid_thw"]).pooler_output
        got = tower(inputs["pixel_values"], grid_thw=inputs["image_grid_thw"]).pooler_output
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert tower._dve_boundaries.cu_seqlens is None  # cleared after the forward
