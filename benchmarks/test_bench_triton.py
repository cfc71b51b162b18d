"""Triton backend benchmarks (CUDA only; skipped elsewhere).

FDLinear forward and forward+backward on the Qwen2.5-VL vision-tower shapes in bf16, side by side in one
pytest-benchmark group per (pass, shape, layout, K) with: nn.Linear on the same tokens, the triton
backend (whole layer, and the op alone), the reference backend, torch.compile of the reference math, and
the per-sample-loop baseline. Each row also records in ``extra_info`` a CUDA-event timing
(``triton.testing.do_bench``), the peak memory of one call, the size of the bases, and the device and
library versions.

    pytest benchmarks/test_bench_triton.py --benchmark-json benchmarks/results/triton_h100.json
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from per_sample_loop import per_sample_loop
from torch import Tensor, nn

from fdlinear import FDLinear
from fdlinear.backends import reference
from fdlinear.functional import fdlinear, pack
from fdlinear.modulation import compute_dtype

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="the triton benchmarks need a CUDA device")

SHAPES = {"qkv": (1280, 3840), "gate_up": (1280, 3420), "down": (3420, 1280)}  # (d_in, d_out)
LAYOUTS = {"8x1024": (8, 1024), "32x256": (32, 256)}  # (images, tokens per image)
NUM_BASES = (4, 8)
IMPLEMENTATIONS = ("nn.Linear", "triton", "triton_op", "reference", "reference_compiled", "per_sample_loop")
PASSES = ("forward", "forward_backward")
DTYPE = torch.bfloat16


@dataclass
class Workload:
    """One benchmark's tensors: the layer, its nn.Linear twin, packed tokens and an upstream gradient."""

    layer: FDLinear
    linear: nn.Linear
    x: Tensor
    cu_seqlens: Tensor
    grad_out: Tensor

    def leaves(self) -> list[Tensor]:
        return [self.x, *self.layer.parameters(), *self.linear.parameters()]


def make_workload(shape: str, layout: str, num_bases: int) -> Workload:
    """Layer converted from a random nn.Linear (bf16, CUDA); tokens of ``images`` equal-length samples."""
    d_in, d_out = SHAPES[shape]
    images, tokens = LAYOUTS[layout]
    torch.manual_seed(0)
    linear = nn.Linear(d_in, d_out, device="cuda", dtype=DTYPE)
    layer = FDLinear.from_linear(linear, num_bases=num_bases)
    with torch.no_grad():  # non-zero modulation heads, as after training (zero heads make every modulation 1)
        for head in layer.KSM_Global.heads():
            head.weight.normal_(0, 0.1)
            head.bias.normal_(0, 0.1)
    x = torch.randn(images * tokens, d_in, device="cuda", dtype=DTYPE, requires_grad=True)
    cu_seqlens = torch.arange(images + 1, device="cuda", dtype=torch.int32) * tokens
    grad_out = torch.randn(images * tokens, d_out, device="cuda", dtype=DTYPE)
    return Workload(layer, linear, x, cu_seqlens, grad_out)


def reference_math(layer: FDLinear, x: Tensor, cu_seqlens: Tensor) -> Tensor:
    """FDLinear's forward with the reference backend's plain PyTorch math inlined (not its opaque custom op),
    so that torch.compile sees, fuses and differentiates all of it."""
    packed = pack(x, cu_seqlens)
    a_in, a_out, beta = layer.KSM_Global(packed.sample_means(compute_dtype(x.dtype)))
    bias = None if layer.bias is None else layer.bias.to(x.dtype)
    return reference.forward(packed.rows, layer.bases(x.dtype), a_in, a_out, beta, bias, packed.cu_seqlens)


def implementation(name: str, work: Workload) -> Callable[[], Tensor]:
    """A zero-argument callable computing the layer's output on the workload's tokens."""
    layer, x, cu = work.layer, work.x, work.cu_seqlens
    if name == "nn.Linear":
        return functools.partial(work.linear, x)
    if name in ("triton", "reference"):
        layer.backend = name
        return functools.partial(layer, x, cu)
    if name == "triton_op":  # the op alone, with the modulations computed once outside the timing
        with torch.no_grad():
            modulations = layer.KSM_Global(pack(x, cu).sample_means(torch.float32))
        a_in, a_out, beta = (t.detach().requires_grad_() for t in modulations)
        bases = layer.bases(x.dtype).detach().requires_grad_()
        return functools.partial(fdlinear, x, bases, a_in, a_out, beta, layer.bias, cu, backend="triton")
    if name == "reference_compiled":
        return functools.partial(torch.compile(reference_math), layer, x, cu)
    if name == "per_sample_loop":
        return functools.partial(per_sample_loop, layer, x, cu)
    raise ValueError(f"unknown implementation {name!r}")


def one_pass(forward: Callable[[], Tensor], pass_name: str, grad_out: Tensor) -> Callable[[], None]:
    """forward only (no autograd graph) or forward+backward, as queued work (no synchronisation)."""

    def run_forward() -> None:
        with torch.no_grad():
            forward()

    def run_forward_backward() -> None:
        forward().backward(grad_out)

    return run_forward if pass_name == "forward" else run_forward_backward


def synchronised(run: Callable[[], None]) -> Callable[[], None]:
    """``run`` followed by a device synchronisation, for wall-clock timing."""

    def run_and_wait() -> None:
        run()
        torch.cuda.synchronize()

    return run_and_wait


def clear_grads(work: Workload) -> None:
    for leaf in work.leaves():
        leaf.grad = None


def peak_memory_mib(run: Callable[[], None], work: Workload) -> float:
    """Memory allocated at the peak of one call beyond what was allocated before it (inputs, parameters, bases)."""
    clear_grads(work)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    run()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - before) / 2**20


def relative_error(got: Tensor, exact: Tensor) -> float:
    return float((got.double() - exact).norm() / exact.norm())


def forward_errors(work: Workload) -> dict[str, float]:
    """Relative errors of the triton and reference layers' bf16 outputs against the float64 reference (docs/design.md §4:
    the backend's may be at most twice the same-dtype reference's, plus a small floor)."""
    exact_layer = copy.deepcopy(work.layer).double()
    exact_layer.backend = "reference"
    with torch.no_grad():
        exact = exact_layer(work.x.double(), work.cu_seqlens)
        errors = {}
        for backend in ("triton", "reference"):
            work.layer.backend = backend
            errors[backend] = relative_error(work.layer(work.x, work.cu_seqlens), exact)
    return errors


def autotuned_configs() -> dict[str, str]:
    """The config each triton kernel ran last (the autotuner's pick for the last shape it saw)."""
    from fdlinear.backends.triton import grad_kernels, matmul_kernels

    kernels = (matmul_kernels.mixed_matmul_kernel, matmul_kernels.expanded_matmul_kernel,
               grad_kernels.mixed_weight_grad_kernel, grad_kernels.expanded_basis_grad_kernel)
    return {kernel.base_fn.__name__: str(kernel.best_config) for kernel in kernels
            if getattr(kernel, "best_config", None) is not None}


def environment() -> dict:
    import triton

    return {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__}


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("num_bases", NUM_BASES, ids=lambda k: f"K{k}")
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("pass_name", PASSES)
def test_fdlinear_triton(benchmark, pass_name, shape, layout, num_bases, impl):
    from triton.testing import do_bench

    work = make_workload(shape, layout, num_bases)
    if impl == "triton":  # a timing of wrong results is worthless: check the autotuned kernels at this shape
        errors = forward_errors(work)
        benchmark.extra_info.update(rel_err_triton=errors["triton"], rel_err_reference_bf16=errors["reference"])
        assert errors["triton"] <= 2 * errors["reference"] + 1e-3, errors
    run = one_pass(implementation(impl, work), pass_name, work.grad_out)
    for _ in range(3):  # compile, autotune and fill the basis cache outside the measurements
        run()
    if impl.startswith("triton"):
        benchmark.extra_info["autotuned"] = autotuned_configs()
    bases_bytes = work.layer.bases(DTYPE).numel() * work.layer.bases(DTYPE).element_size()
    benchmark.group = f"{pass_name} {shape} {layout} K={num_bases}"
    benchmark.extra_info.update(
        environment(),
        impl=impl,
        tokens=work.x.shape[0],
        peak_mb=peak_memory_mib(run, work),
        bases_mib=bases_bytes / 2**20,
        cuda_event_ms=do_bench(run, grad_to_none=work.leaves(), return_mode="median"),
    )
    benchmark.pedantic(synchronised(run), setup=functools.partial(clear_grads, work), rounds=30, warmup_rounds=3,
                       iterations=1)
