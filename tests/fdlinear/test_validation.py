"""Bad input gets a clear error naming the argument before any kernel runs; NaN stays inside its sample."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fdlinear import FDLinear, fdlinear
from fdlinear.backends import available_backends
from fdlinear.functional import pack
from fdlinear.segments import checked_boundaries
from tests import REPO
from tests.fdlinear.module_cases import active_layer, packed_input
from tests.fdlinear.op_cases import DispatchRecorder

ALL_BACKENDS = available_backends()  # triton runs under TRITON_INTERPRET=1 without a GPU (tests/conftest.py)
CPU_BACKENDS = [name for name in ALL_BACKENDS if name != "triton"]


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


def test_bad_backend(layer, monkeypatch):
    with pytest.raises(ValueError, match="backend must be None or one of"):
        FDLinear(6, 4, backend="cuda-magic")  # at construction, not at the first forward
    monkeypatch.setenv("FDLINEAR_BACKEND", "cuda-magic")
    with pytest.raises(ValueError, match="FDLINEAR_BACKEND must be one of"):
        layer(torch.randn(2, 6))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"in_features": True}, TypeError, "in_features must be an integer, got bool"),
        ({"out_features": 4.0}, TypeError, "out_features must be an integer, got float"),
        ({"num_bases": True}, TypeError, "num_bases must be an integer, got bool"),
        ({"num_bases": "4"}, TypeError, "num_bases must be an integer"),
        ({"bias": "yes"}, TypeError, "bias must be a bool"),
        ({"reduction": float("nan")}, ValueError, "reduction must be finite"),
        ({"reduction": float("inf")}, ValueError, "reduction must be finite"),
        ({"reduction": -0.5}, ValueError, "reduction must be >= 0"),
        ({"reduction": "0.1"}, TypeError, "reduction must be a real number"),
        ({"min_channels": 0}, ValueError, "min_channels must be an integer >= 1"),
        ({"min_channels": False}, TypeError, "min_channels must be an integer, got bool"),
        ({"dtype": torch.int64}, TypeError, "dtype must be a floating-point torch dtype"),
        # 2x2 spectral coefficients for 3 -> 2: five bases would leave one empty (silently fewer bases before)
        ({"in_features": 3, "out_features": 2, "num_bases": 5}, ValueError, "between 1 and the 2x2 = 4 spectral"),
    ],
)
def test_bad_construction_names_the_argument(kwargs, error, match):
    args = {"in_features": 6, "out_features": 4, **kwargs}
    with pytest.raises(error, match=match):
        FDLinear(**args)


def test_integer_arguments_of_other_types_are_taken_as_nn_linear_takes_them():
    layer = FDLinear(np.int64(6), np.int32(4), num_bases=np.int16(2), min_channels=np.int64(8))
    assert (layer.in_features, layer.out_features, layer.num_bases) == (6, 4, 2)
    assert all(type(v) is int for v in (layer.in_features, layer.out_features, layer.num_bases))
    assert layer(torch.randn(3, 6)).shape == (3, 4)
    every_coefficient = FDLinear(3, 2, num_bases=4)  # K = number of coefficients: one each, none empty
    assert torch.unique(every_coefficient.frequency_groups).tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_zero_bases_are_refused_by_every_backend(backend):
    x = torch.randn(3, 6)
    with pytest.raises(ValueError, match="bases must hold K >= 1"):
        fdlinear(x, torch.randn(0, 4, 6), torch.ones(3, 6), torch.ones(3, 4), torch.ones(3, 0), backend=backend)


def test_inconsistent_boundaries_never_abort_the_process():
    """Eager and compiled layers, the functional op, every raw custom op (forward and backward, each form) and the
    row-map helpers, on boundaries that disagree with the rows: ValueError naming cu_seqlens, never a write out
    of bounds. (Compiled code used to skip the check and die in repeat_interleave: `free(): invalid next size`.)
    A separate process, since the failure is the death of the process."""
    script = Path(__file__).with_name("inconsistent_boundaries.py")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, str(script), *ALL_BACKENDS], capture_output=True, text=True,
                            timeout=600, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert "ALL OK" in result.stdout
    for backend in ALL_BACKENDS:
        assert f"{backend}: ValueError everywhere" in result.stdout


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_boundaries_changed_where_torch_does_not_count_are_seen(backend):
    """A cu_seqlens sharing a numpy buffer, or edited through .data, keeps its version: the values decide."""
    layer = active_layer(6, 4, dtype=torch.float64, backend=backend)
    x = torch.randn(5, 6, dtype=torch.float64)
    buffer = np.array([0, 2, 5])
    shared = torch.from_numpy(buffer)
    layer(x, shared)
    buffer[1] = 3
    torch.testing.assert_close(layer(x, shared), layer(x, torch.tensor([0, 3, 5])), rtol=0, atol=0)
    buffer[1] = 9
    with pytest.raises(ValueError, match="non-decreasing"):
        layer(x, shared)
    cu = torch.tensor([0, 2, 5])
    layer(x, cu)
    version = cu._version
    cu.data[1] = 4
    assert cu._version == version  # torch did not count it
    torch.testing.assert_close(layer(x, cu), layer(x, torch.tensor([0, 4, 5])), rtol=0, atol=0)


def test_kernels_read_a_private_checked_copy():
    x = torch.randn(5, 6)
    cu = torch.tensor([0, 2, 5])
    checked = pack(x, cu).cu_seqlens
    assert checked is not cu and torch.equal(checked, cu)
    assert pack(x, cu).cu_seqlens is checked  # the same copy while cu is unchanged
    assert checked_boundaries(checked, 5, x.device) is checked  # already checked: no second check
    with pytest.raises(ValueError, match="end at the token count 4"):
        checked_boundaries(checked, 4, x.device)  # checked for another row count: checked again


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_uniform_form_rebuilds_the_boundaries_from_the_sizes(backend):
    """Batched and per-row inputs reach the op with the ':uniform' form: whatever values come with it, the op uses
    equal samples built from the sizes (nothing to read back), and refuses sizes that cannot be equal samples."""
    args = [torch.randn(6, 5), torch.randn(2, 3, 5), torch.rand(3, 5), torch.rand(3, 3), torch.rand(3, 2), None]
    raw = getattr(torch.ops.fdlinear, f"{backend}_forward")
    expected = raw(*args, torch.tensor([0, 2, 4, 6]), "auto")
    assert torch.equal(raw(*args, torch.tensor([0, 99, -7, 1]), "auto:uniform"), expected)
    with pytest.raises(ValueError, match="7 rows cannot form 3 samples of equal length"):
        raw(torch.randn(7, 5), *args[1:], torch.tensor([0, 2, 4, 7]), "auto:uniform")


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
