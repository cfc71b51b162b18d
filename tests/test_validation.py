"""Bad input gets a clear error naming the argument before any kernel runs; NaN stays inside its sample."""

import pytest
import torch
from module_cases import active_layer, packed_input
from op_cases import DispatchRecorder

from fdlinear import FDLinear, fdlinear
from fdlinear.functional import pack


@pytest.fixture
def layer():
    return FDLinear(6, 4, num_bases=2)


@pytest.mark.parametrize(
    "cu, error, match",
    [
        (torch.tensor([1, 3, 5]), ValueError, "cu_seqlens must start at 0"),
        (torch.tensor([0, 4, 2, 5]), ValueError, "non-decreasing"),
        (torch.tensor([0, 2, 4]), ValueError, "end at the token count 5"),
        (torch.tensor([0.0, 2.0, 5.0]), TypeError, "cu_seqlens must be int32 or int64"),
        (torch.tensor([[0, 5]]), ValueError, "cu_seqlens must be 1-D"),
        (torch.tensor([], dtype=torch.int64), ValueError, "cu_seqlens must be 1-D"),
        (torch.tensor([0, 5], device="meta"), ValueError, "cu_seqlens is on meta"),
        ([0, 5], TypeError, "cu_seqlens must be a tensor"),
    ],
)
def test_bad_cu_seqlens(layer, cu, error, match):
    with pytest.raises(error, match=match):
        layer(torch.randn(5, 6), cu)


def test_bad_x(layer):
    with pytest.raises(ValueError, match="x has last dimension 5 but in_features is 6"):
        layer(torch.randn(3, 5))
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        layer(torch.ones(3, 6, dtype=torch.int64))
    with pytest.raises(TypeError, match="x must be a tensor"):
        layer([[0.0] * 6])
    with pytest.raises(ValueError, match="x must be packed"):
        layer(torch.randn(2, 3, 6), torch.tensor([0, 3, 6]))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_bases": 0}, "num_bases must be an integer >= 1"),
        ({"in_features": 0}, "in_features must be an integer >= 1"),
        ({"out_features": -2}, "out_features must be an integer >= 1"),
        ({"partition": "radial"}, "partition must be one of"),
        ({"num_bases": 5, "partition": "fdconv"}, "num_bases to divide"),
    ],
)
def test_bad_construction(kwargs, match):
    args = {"in_features": 6, "out_features": 4, **kwargs}
    with pytest.raises(ValueError, match=match):
        FDLinear(**args)


def test_bad_backend(layer):
    with pytest.raises(ValueError, match="backend must be one of"):
        FDLinear(6, 4, backend="cuda-magic")(torch.randn(2, 6))


def test_functional_checks_every_argument():
    x, cu = packed_input([2, 3], 6, torch.float32)
    good = {
        "bases": torch.randn(2, 4, 6), "a_in": torch.ones(2, 6), "a_out": torch.ones(2, 4),
        "beta": torch.ones(2, 2), "bias": torch.zeros(4),
    }
    assert fdlinear(x, **good, cu_seqlens=cu).shape == (5, 4)
    for name, bad, match in [
        ("bases", torch.randn(2, 4, 5), "bases must have shape"),
        ("a_in", torch.ones(3, 6), "a_in must have shape"),
        ("a_out", torch.ones(2, 5), "a_out must have shape"),
        ("beta", torch.ones(2, 3), "beta must have shape"),
        ("bias", torch.zeros(5), "bias must have shape"),
        ("beta", torch.ones(2, 2, dtype=torch.int64), "beta must be floating-point"),
        ("a_in", torch.ones(2, 6, device="meta"), "a_in is on meta"),
    ]:
        with pytest.raises((ValueError, TypeError), match=match):
            fdlinear(x, **{**good, name: bad}, cu_seqlens=cu)


@pytest.mark.parametrize("seqlens", [[3, 1, 4, 0, 2], [1] * 6, [20, 1, 25, 0, 18]])  # expand, per-row, mix
def test_nan_in_one_sample_stays_there(seqlens):
    layer = active_layer(6, 4, dtype=torch.float32)
    x, cu = packed_input(seqlens, 6, torch.float32)
    clean = layer(x, cu)
    poisoned = x.clone()
    poisoned[cu[2]] = float("nan")  # first row of sample 2
    out = layer(poisoned, cu)
    inside = torch.zeros(len(x), dtype=torch.bool)
    inside[cu[2] : cu[3]] = True
    assert torch.isnan(out[inside]).all()
    torch.testing.assert_close(out[~inside], clean[~inside])


def _reads(fn) -> int:
    with DispatchRecorder() as recorder:
        fn()
    return recorder.scalar_reads


def test_boundaries_are_read_back_once_per_tensor():
    x = torch.randn(5, 6)
    cu = torch.tensor([0, 2, 2, 5])
    assert _reads(lambda: pack(x, cu)) == 1
    assert _reads(lambda: pack(x, cu)) == 0  # the same tensor again: what a model's other layers do
    assert _reads(lambda: pack(x[:4], torch.tensor([0, 4]))) == 1
    assert _reads(lambda: pack(x, cu.clone())) == 1  # equal values, another tensor: checked
    cu.add_(0)  # an in-place change bumps the version: checked again
    assert _reads(lambda: pack(x, cu)) == 1
    with torch.inference_mode():
        frozen = torch.tensor([0, 5])
    assert _reads(lambda: pack(x, frozen)) == 1  # inference tensors have no version: checked every time
    assert _reads(lambda: pack(x, frozen)) == 1


def test_boundaries_changed_in_place_are_checked_again():
    x = torch.randn(5, 6)
    cu = torch.tensor([0, 2, 5])
    pack(x, cu)
    cu[1] = 7
    with pytest.raises(ValueError, match="non-decreasing"):
        pack(x, cu)
    with pytest.raises(ValueError, match="end at the token count 4"):
        pack(x[:4], torch.tensor([0, 2, 5]))


def test_sample_means_read_nothing_back():
    x = torch.randn(7, 6)
    cu = torch.tensor([0, 3, 3, 7])
    packed = pack(x, cu)
    assert _reads(lambda: packed.sample_means(torch.float64)) == 0
    means = packed.sample_means(torch.float64)
    expected = torch.stack([x[:3].mean(0), torch.zeros(6), x[3:].mean(0)]).double()
    torch.testing.assert_close(means, expected)


def test_layer_forward_reads_boundaries_back_once_per_tensor():
    """The module's own steps (checks, sample means, modulation, bases) read nothing back but the first check of
    a boundaries tensor. (The mode does not see inside the backend's custom op.)"""
    layer = FDLinear(6, 4, num_bases=2)
    x, cu = torch.randn(7, 6), torch.tensor([0, 3, 3, 7])
    assert _reads(lambda: layer(x, cu)) == 1
    assert _reads(lambda: layer(x, cu)) == 0
    assert _reads(lambda: layer(x, cu.clone())) == 1
    assert _reads(lambda: layer(x.unflatten(0, (7, 1)))) == 0  # batched input: boundaries made, not checked
