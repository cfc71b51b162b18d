"""The native backend (csrc/): outputs and gradients against the float64 reference, forms, layouts, opcheck,
thread-count independence, NaN isolation, errors and FDLinear end to end. CUDA tests need a GPU.

The extension is required: these tests fail (not skip) when it is missing, unless the environment says it was
deliberately not built (FDLINEAR_BUILD_NATIVE=0).
"""

import functools
import importlib
import os
import shutil
import subprocess
import sys
import warnings

import pytest
import torch

from fdlinear import FDLinear
from fdlinear.backends import available_backends, default_backend, native
from tests import REPO
from tests.fdlinear.op_cases import (
    GRAD_NAMES,
    assert_matches_oracle,
    assert_matches_reference,
    make_case,
    reference_op,
    run_op,
)

if os.environ.get("FDLINEAR_BUILD_NATIVE") == "0":
    pytest.skip("the native extension was deliberately not built", allow_module_level=True)

FORMS = ("auto", "mix", "expand")
LAYOUTS = {
    "ragged": [5, 0, 1, 9, 3],
    "one_sample": [6],
    "per_row": [1] * 7,
    "all_empty": [0, 0],
    "no_samples": [],
}
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
CUDA_SOURCE = REPO / "csrc" / "cuda" / "ops.cu"


def native_op(*args, form: str = "auto"):
    return torch.ops.fdlinear.native_forward(*args, form)


def raw_inputs(case, dtype=torch.float32, device="cpu"):
    """(x, bases, a_in, a_out, beta, bias, cu_seqlens) without autograd, for the raw fdlinear_native ops."""
    return (*case.tensors(dtype, device, requires_grad=False), case.cu_seqlens.to(device))


def forward_and_grads(case, dtype, form):
    y, grads = run_op(functools.partial(native_op, form=form), case, dtype)
    return [y, *grads]


def test_native_is_registered_and_the_cpu_default():
    assert "native" in available_backends()
    assert default_backend(torch.device("cpu")) == "native"


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("bias", [True, False])
def test_matches_naive_oracle_in_float64(form, layout, bias):
    case = make_case(LAYOUTS[layout], 13, 7, 3, bias=bias, seed=1)
    assert_matches_oracle(functools.partial(native_op, form=form), case)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize(
    ("seqlens", "d_in", "d_out", "num_bases"),
    [
        ([5, 0, 1, 9, 3], 13, 9, 3),  # odd dims, empty and length-1 samples
        ([1] * 9, 7, 17, 5),  # per-row samples, K > 4 (bases combined in several passes)
        ([40, 0, 33, 1, 50], 130, 150, 4),  # several output/input tiles, partial last tiles
        ([3, 7, 2, 0, 5, 6, 1, 4, 8, 2, 3, 5], 1100, 40, 2),  # several sample groups per tile
        ([4, 6], 9, 5, 1),  # K = 1
    ],
)
def test_matches_reference_with_tolerance_rule(dtype, form, seqlens, d_in, d_out, num_bases):
    case = make_case(seqlens, d_in, d_out, num_bases, seed=len(seqlens))
    assert_matches_reference(functools.partial(native_op, form=form), case, dtype)


@pytest.mark.parametrize("form", ["mix", "expand"])
def test_float16_follows_the_tolerance_rule(form):
    case = make_case([6, 1, 0, 11], 24, 10, 4, seed=3)
    assert_matches_reference(functools.partial(native_op, form=form), case, torch.float16)


@pytest.mark.parametrize("form", ["mix", "expand"])
def test_gradcheck_float64(form):
    case = make_case([3, 0, 1, 4], 5, 4, 2, seed=2)
    inputs = case.tensors(torch.float64)

    def fn(*tensors):
        return native_op(*tensors, case.cu_seqlens, form=form)

    assert torch.autograd.gradcheck(fn, inputs)


def test_gradients_come_in_each_inputs_dtype():
    case = make_case([3, 5], 8, 6, 2)
    x, bases, a_in, a_out, beta, bias = case.tensors(torch.bfloat16)  # modulations stay float32
    native_op(x, bases, a_in, a_out, beta, bias, case.cu_seqlens).float().sum().backward()
    for tensor in (x, bases, a_in, a_out, beta, bias):
        assert tensor.grad.dtype == tensor.dtype


@pytest.mark.parametrize("form", FORMS)
def test_opcheck_custom_op(form):
    case = make_case([4, 0, 1, 6], 11, 7, 3)
    args = (*case.tensors(torch.float32), case.cu_seqlens, form)
    torch.library.opcheck(torch.ops.fdlinear.native_forward, args)


def test_opcheck_raw_ops():
    case = make_case([4, 0, 1, 6], 11, 7, 3)
    x, bases, a_in, a_out, beta, bias, cu = raw_inputs(case)
    torch.library.opcheck(torch.ops.fdlinear_native.forward, (x, bases, a_in, a_out, beta, bias, cu, "mix"))
    grad_y = case.grad_y.float()
    for needs in ([True] * 6, [True, False, True, False, False, True]):
        args = (grad_y, x, bases, a_in, a_out, beta, cu, needs, "expand")
        torch.library.opcheck(torch.ops.fdlinear_native.backward, args)


def test_gradients_not_asked_for_are_empty():
    case = make_case([4, 2], 6, 5, 2)
    x, bases, a_in, a_out, beta, _, cu = raw_inputs(case)
    needs = [False, True, False, True, False, False]
    grads = torch.ops.fdlinear_native.backward(case.grad_y.float(), x, bases, a_in, a_out, beta, cu, needs, "mix")
    for grad, need, like in zip(grads, needs, (x, bases, a_in, a_out, beta, x)):
        assert grad.shape == (like.shape if need else (0,))


THREAD_CASES = {
    # several groups of whole samples, ragged with empty and length-1 samples
    "groups": ([70, 0, 1, 130, 45, 3, 260], 200, 300, 4),
    # fewer tasks than threads (one group of rows, one output tile): the GEMMs run outside a parallel region
    "one task": ([40, 0, 1, 50], 320, 250, 4),
    # one long sample over several output tiles, with a wide reduction (K · d_out) in the expand form
    "long sample": ([600], 160, 520, 3),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case_name", THREAD_CASES)
@pytest.mark.parametrize("form", ["mix", "expand"])
def test_results_do_not_depend_on_the_thread_count(form, case_name, dtype):
    """Bit-identical under 1 and 2 threads, although MKL's GEMM kernels depend on its thread budget."""
    case = make_case(*THREAD_CASES[case_name], seed=7)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = forward_and_grads(case, dtype, form)
        torch.set_num_threads(2)
        double = forward_and_grads(case, dtype, form)
    finally:
        torch.set_num_threads(threads)
    for name, one, two in zip(("y", *GRAD_NAMES), single, double):
        assert torch.equal(one, two), f"{name} differs between 1 and 2 threads"


@pytest.mark.parametrize("form", ["mix", "expand"])
@pytest.mark.parametrize("poisoned", ["x", "a_in", "a_out", "beta"])
def test_nan_in_one_sample_stays_in_that_sample(form, poisoned):
    case = make_case([3, 4, 2], 9, 6, 3, seed=4)
    inputs = dict(zip(GRAD_NAMES, case.tensors(torch.float32, requires_grad=False)))
    if poisoned == "x":
        inputs["x"][3:7] = float("nan")  # the rows of sample 1
    else:
        inputs[poisoned][1] = float("nan")
    y = native_op(*inputs.values(), case.cu_seqlens, form=form)
    assert torch.isnan(y[3:7]).all()
    assert torch.isfinite(y[:3]).all() and torch.isfinite(y[7:]).all()


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"form": "dense"}, ValueError, "form"),
        ({"cu_seqlens": torch.tensor([0, 2, 5])}, ValueError, "cu_seqlens"),
        ({"cu_seqlens": torch.tensor([0, 7, 6])}, ValueError, "non-decreasing"),
        ({"cu_seqlens": torch.tensor([0, 2, 6], dtype=torch.float32)}, TypeError, "cu_seqlens"),
        ({"a_in": torch.ones(2, 5)}, ValueError, "a_in"),
        ({"a_out": torch.ones(3, 4)}, ValueError, "a_out"),
        ({"beta": torch.ones(2, 3)}, ValueError, "beta"),
        ({"beta": torch.ones(2, 2, dtype=torch.int64)}, TypeError, "beta must be floating-point"),
        ({"bases": torch.ones(2, 4, 3)}, ValueError, "bases"),
        ({"bases": torch.ones(0, 4, 6), "beta": torch.ones(2, 0)}, ValueError, "K >= 1"),
        ({"bias": torch.ones(5)}, ValueError, "bias"),
    ],
)
def test_raw_op_rejects_bad_arguments_by_name(change, error, message):
    """The extension's own checks raise the Python error types of the documented contract (ValueError for
    values and shapes, TypeError for dtypes), also when called directly, never a generic RuntimeError."""
    case = make_case([2, 4], 6, 4, 2)
    x, bases, a_in, a_out, beta, bias, cu = raw_inputs(case)
    args = {"x": x, "bases": bases, "a_in": a_in, "a_out": a_out, "beta": beta, "bias": bias, "cu_seqlens": cu,
            "form": "auto"}
    args.update(change)
    with pytest.raises(error, match=message):
        torch.ops.fdlinear_native.forward(*args.values())


def test_fdlinear_module_end_to_end():
    torch.manual_seed(0)
    native = FDLinear(24, 18, num_bases=4, backend="native")
    with torch.no_grad():  # non-trivial modulations, so that every gradient path is exercised
        for param in native.KSM_Global.parameters():
            param.normal_(0, 0.3)
    reference = FDLinear(24, 18, num_bases=4, backend="reference")
    reference.load_state_dict(native.state_dict())
    x = torch.randn(20, 24)
    cu = torch.tensor([0, 7, 7, 8, 20])
    outputs = []
    for layer in (native, reference):
        y = layer(x, cu)
        (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
        outputs.append((y.detach(), {name: p.grad.clone() for name, p in layer.named_parameters()}))
    (y_native, grads_native), (y_reference, grads_reference) = outputs
    torch.testing.assert_close(y_native, y_reference, rtol=1e-5, atol=1e-5)
    assert grads_native.keys() == grads_reference.keys()
    for name in grads_native:
        torch.testing.assert_close(grads_native[name], grads_reference[name], rtol=1e-4, atol=1e-5, msg=name)


def test_fdlinear_uses_native_by_default_on_cpu():
    layer = FDLinear(8, 6)
    x = torch.randn(2, 5, 8)
    torch.testing.assert_close(layer(x), FDLinear.forward(_with_backend(layer, "reference"), x))


def _with_backend(layer: FDLinear, backend: str) -> FDLinear:
    copy = FDLinear(layer.in_features, layer.out_features, bias=layer.bias is not None,
                    num_bases=layer.num_bases, backend=backend)
    copy.load_state_dict(layer.state_dict())
    return copy


ISA_CHECK = """
import functools, sys, torch
sys.path.insert(0, {repo!r})
from tests.fdlinear.op_cases import assert_matches_reference, make_case
assert torch.ops.fdlinear_native.cpu_isa() == {isa!r}, torch.ops.fdlinear_native.cpu_isa()
for dtype in (torch.float64, torch.float32, torch.bfloat16):
    for seqlens, d_in, d_out, k in (([5, 0, 1, 9, 3], 13, 9, 3), ([40, 0, 33, 1, 50], 130, 150, 6)):
        op = functools.partial(torch.ops.fdlinear.native_forward, form="mix")
        assert_matches_reference(op, make_case(seqlens, d_in, d_out, k, seed=k), dtype)
"""


def test_cpu_isa_names_the_row_kernels():
    assert torch.ops.fdlinear_native.cpu_isa() in ("avx512", "avx2", "portable")


@pytest.mark.parametrize("isa", ["portable", "avx2"])
def test_narrower_row_kernels_match_reference(isa):
    """The row kernels compiled for narrower instruction sets (FDLINEAR_CPU_ISA caps the run-time choice)."""
    if isa == "avx2" and torch.ops.fdlinear_native.cpu_isa() == "portable":
        pytest.skip("this CPU has no AVX2")
    code = ISA_CHECK.format(repo=str(REPO), isa=isa)
    result = subprocess.run([sys.executable, "-c", code], env={**os.environ, "FDLINEAR_CPU_ISA": isa},
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]


def test_missing_extension_warns_once_and_raises(monkeypatch):
    def fail(name):
        raise ImportError(f"No module named {name!r}")

    monkeypatch.setattr(importlib, "import_module", fail)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ImportError):
            native.register()
    assert len(caught) == 1
    assert "reference" in str(caught[0].message) and native.EXTENSION in str(caught[0].message)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc (the CUDA kernels are compile-checked only)")
def test_cuda_kernels_compile_with_nvcc(tmp_path):
    """nvcc compiles csrc/cuda/ops.cu (device code for sm_90) against this torch's headers. A CPU wheel lacks one
    generated header of c10/cuda; a stand-in with the content CMake generates for a shared build is supplied."""
    from torch.utils import cpp_extension

    stub = tmp_path / "c10" / "cuda" / "impl" / "cuda_cmake_macros.h"
    stub.parent.mkdir(parents=True)
    stub.write_text("#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n")
    includes = [f"-I{path}" for path in (*cpp_extension.include_paths(), tmp_path)]
    command = ["nvcc", "-std=c++20", "-c", str(CUDA_SOURCE), "-o", str(tmp_path / "ops.o"), *includes,
               *cpp_extension.COMMON_NVCC_FLAGS, "-gencode", "arch=compute_90,code=sm_90", "-Xcompiler", "-fPIC"]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]
    assert (tmp_path / "ops.o").stat().st_size > 0


@CUDA
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("form", FORMS)
def test_cuda_matches_reference(dtype, form):
    case = make_case([40, 0, 1, 33, 7], 130, 150, 4, seed=5)
    assert_matches_reference(functools.partial(native_op, form=form), case, dtype, device="cuda")


@CUDA
@pytest.mark.gpu
def test_cuda_opcheck():
    case = make_case([4, 0, 1, 6], 11, 7, 3)
    args = (*case.tensors(torch.float32, "cuda"), case.cu_seqlens.cuda(), "auto")
    torch.library.opcheck(torch.ops.fdlinear.native_forward, args)


DEVICES = ["cpu", pytest.param("cuda", marks=[CUDA, pytest.mark.gpu])]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize(("d_in", "d_out"), [(0, 5), (6, 0)])
def test_zero_feature_dims(d_in, d_out, form, device):
    """No input or no output features: empty outputs and zero gradients of the right shapes (the CUDA backward
    must not launch kernels over zero elements)."""
    case = make_case([3, 0, 1, 4], d_in, d_out, 2, seed=6)
    y, grads = run_op(functools.partial(native_op, form=form), case, torch.float32, device)
    exact_y, exact_grads = run_op(reference_op, case, torch.float64)
    torch.testing.assert_close(y.cpu().double(), exact_y)
    for name, got, want in zip(GRAD_NAMES, grads, exact_grads):
        torch.testing.assert_close(got.cpu().double(), want, msg=f"d{name}")


@pytest.mark.parametrize("device", DEVICES)
def test_bad_form_is_rejected_without_rows(device):
    case = make_case([0, 0], 5, 4, 2)
    args = (*case.tensors(torch.float32, device, requires_grad=False), case.cu_seqlens.to(device))
    with pytest.raises(ValueError, match="form must be one of"):
        torch.ops.fdlinear.native_forward(*args, "fast")
