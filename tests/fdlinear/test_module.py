"""FDLinear as a drop-in nn.Linear: input forms, from_linear exactness, gradcheck, conversions and plumbing."""

import copy
import io

import pytest
import torch
from torch import nn

from fdlinear import FDLinear
from tests.fdlinear.module_cases import active_layer, packed_input


def _forms(d_in: int, dtype=torch.float64):
    gen = torch.Generator().manual_seed(5)
    x4 = torch.randn(2, 3, 4, d_in, generator=gen, dtype=dtype)
    x_packed, cu = packed_input([4, 0, 1, 6], d_in, dtype)
    return {
        "packed": (x_packed, cu),
        "batched3d": (x4[0], None),
        "batched4d": (x4, None),
        "per_row": (x4[0, 0], None),
        "one_row": (x4[0, 0, 0], None),
    }


@pytest.mark.parametrize("form", ["packed", "batched3d", "batched4d", "per_row", "one_row"])
@pytest.mark.parametrize("num_bases", [1, 4])
def test_from_linear_reproduces_linear_in_every_form(form, num_bases):
    torch.manual_seed(0)
    linear = nn.Linear(13, 7)
    layer = FDLinear.from_linear(linear, num_bases=num_bases)
    x, cu = _forms(13, torch.float32)[form]
    expected = linear(x)
    got = layer(x, cu) if cu is not None else layer(x)
    assert got.shape == expected.shape
    assert (got - expected).abs().max() <= 1e-6 * expected.abs().max()
    assert (layer.weight - linear.weight).abs().max() <= 1e-6 * linear.weight.abs().max()


def test_forms_agree_with_per_sample_calls():
    layer = active_layer(9, 5)
    forms = _forms(9)
    x, cu = forms["packed"]
    packed = layer(x, cu)
    for s in range(len(cu) - 1):
        rows = x[cu[s] : cu[s + 1]]
        if len(rows):
            alone = layer(rows.unsqueeze(0))[0]
            torch.testing.assert_close(packed[cu[s] : cu[s + 1]], alone, rtol=1e-12, atol=1e-12)
    x4 = forms["batched4d"][0]
    batched = layer(x4)
    assert batched.shape == (2, 3, 4, 5)
    torch.testing.assert_close(batched[1, 2], layer(x4[1, 2].unsqueeze(0))[0], rtol=1e-12, atol=1e-12)
    rows = forms["per_row"][0]
    per_row = layer(rows)
    torch.testing.assert_close(per_row[2], layer(rows[2]), rtol=1e-12, atol=1e-12)
    assert layer(rows[2]).shape == (5,)
    # each row is its own sample: rows of one sample differ from per-row results
    assert not torch.allclose(layer(rows.unsqueeze(0))[0], per_row)


@pytest.mark.parametrize("form", ["packed", "batched3d", "per_row", "one_row"])
def test_module_gradcheck_every_form(form):
    layer = active_layer(6, 4, num_bases=2)
    x, cu = _forms(6)[form]
    names, params = zip(*layer.named_parameters())

    def fn(x, *values):
        out = torch.func.functional_call(layer, dict(zip(names, values)), (x,) if cu is None else (x, cu))
        return out

    assert torch.autograd.gradcheck(fn, (x.clone().requires_grad_(), *[p.detach().requires_grad_() for p in params]))


def test_empty_inputs():
    layer = active_layer(6, 4)
    assert layer(torch.zeros(0, 6, dtype=torch.float64)).shape == (0, 4)
    assert layer(torch.zeros(3, 0, 6, dtype=torch.float64)).shape == (3, 0, 4)
    x = torch.zeros(0, 6, dtype=torch.float64, requires_grad=True)
    y = layer(x, torch.tensor([0, 0, 0]))
    y.sum().backward()
    assert y.shape == (0, 4) and x.grad.shape == (0, 6)


def test_drop_in_attributes_and_repr():
    layer = FDLinear(12, 10, bias=False, num_bases=3)
    assert (layer.in_features, layer.out_features, layer.bias) == (12, 10, None)
    assert layer.weight.shape == (10, 12)
    assert "num_bases=3" in repr(layer) and "in_features=12" in repr(layer)
    assert not hasattr(FDLinear(12, 10, num_bases=1).KSM_Global, "kernel_fc")


def test_to_half_double_and_deepcopy():
    layer = active_layer(8, 6, dtype=torch.float32)
    x = torch.randn(2, 5, 8)
    expected = layer(x)
    clone = copy.deepcopy(layer)
    torch.testing.assert_close(clone(x), expected)
    double = copy.deepcopy(layer).to(torch.float64)
    torch.testing.assert_close(double(x.double()).float(), expected, rtol=1e-5, atol=1e-6)
    half = copy.deepcopy(layer).half()
    out = half(x.half())
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.float(), expected, rtol=2e-2, atol=2e-2)
    buffer = io.BytesIO()
    torch.save(layer, buffer)
    buffer.seek(0)
    torch.testing.assert_close(torch.load(buffer, weights_only=False)(x), expected)


def test_state_dict_round_trip_and_keys():
    layer = active_layer(8, 6, dtype=torch.float32)
    keys = set(layer.state_dict())
    assert keys == {
        "dft_weight", "bias", "KSM_Global.fc.weight", "KSM_Global.norm.weight",
        "KSM_Global.channel_fc.weight", "KSM_Global.channel_fc.bias", "KSM_Global.filter_fc.weight",
        "KSM_Global.filter_fc.bias", "KSM_Global.kernel_fc.weight", "KSM_Global.kernel_fc.bias",
    }
    other = FDLinear(8, 6, num_bases=3)
    x = torch.randn(3, 4, 8)
    before = other(x)  # fills the basis cache with the old weights
    other.load_state_dict(layer.state_dict())
    torch.testing.assert_close(other(x), layer(x))
    assert not torch.allclose(before, other(x))


def test_to_linear_static_and_per_sample():
    layer = active_layer(8, 6)
    tokens = torch.randn(5, 8, dtype=torch.float64)
    static = layer.to_linear()
    torch.testing.assert_close(static.weight, layer.weight)
    dynamic = layer.to_linear(tokens)
    torch.testing.assert_close(dynamic(tokens), layer(tokens.unsqueeze(0))[0])
    torch.testing.assert_close(layer.to_linear(tokens.mean(0))(tokens), dynamic(tokens))


def test_training_step_changes_outputs_consistently():
    layer = active_layer(8, 6, dtype=torch.float32)
    optimizer = torch.optim.Adam(layer.parameters(), lr=1e-2)
    x = torch.randn(4, 5, 8)
    for _ in range(2):
        optimizer.zero_grad()
        layer(x).square().mean().backward()
        optimizer.step()
    fresh = FDLinear(8, 6, num_bases=3)
    fresh.load_state_dict(layer.state_dict())
    torch.testing.assert_close(layer(x), fresh(x))  # the cache followed the optimizer steps


@pytest.mark.slow
def test_torch_compile_matches_eager():
    layer = active_layer(8, 6, dtype=torch.float32)
    model = nn.Sequential(layer, nn.ReLU(), nn.Linear(6, 3))
    compiled = torch.compile(model, fullgraph=True)
    x = torch.randn(2, 5, 8, requires_grad=True)
    expected = model(x)
    got = compiled(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    got.sum().backward()
    grad_compiled = layer.dft_weight.grad.clone()
    layer.dft_weight.grad = None
    model(x).sum().backward()
    torch.testing.assert_close(grad_compiled, layer.dft_weight.grad, rtol=1e-4, atol=1e-6)
