"""Native backend (csrc/) benchmarks, side by side in one run with nn.Linear on the same tokens, the reference
backend and the per-sample-loop baseline.

CPU (fp32, 2 threads, see conftest.py): 8 samples x 256 tokens for 512->1024 and 1024->512, K=4, and the per-row
case (4,096 one-row samples, 256->256); forward and forward+backward. Rows: ``native`` / ``reference`` (the whole
FDLinear layer: modulation, bases and op), ``native_op`` / ``reference_op`` (the op alone, modulations and bases
computed once outside the timing), ``nn.Linear`` and ``per_sample_loop``. The ``form crossover`` groups time the
native op's two forms against the mean sample length (the basis of its automatic choice). The ``native paired``
groups call nn.Linear and the op alternately in each round, so their ratio (``paired_ratio``) is immune to the
slow drift of a shared machine.
GPU (bf16, skipped without CUDA): the Qwen2.5-VL ViT projections, 8 images x 1024 tokens, native beside triton.

    pytest benchmarks/test_bench_native.py
"""

from __future__ import annotations

import functools

import pytest
import torch
from conftest import active_layer, alternating_rounds, packed_tokens
from per_sample_loop import per_sample_loop
from torch import nn

from fdlinear.backends import available_backends
from fdlinear.functional import fdlinear, pack
from fdlinear.modulation import compute_dtype

pytestmark = pytest.mark.skipif("native" not in available_backends(), reason="the native extension is not built")

CPU_CASES = [
    ("8x256 512->1024", 8, 256, 512, 1024),
    ("8x256 1024->512", 8, 256, 1024, 512),
    ("per-row 4096 256->256", 4096, 1, 256, 256),
]
GPU_CASES = [("qkv 1280->3840", 8, 1024, 1280, 3840), ("up 1280->3420", 8, 1024, 1280, 3420),
             ("down 3420->1280", 8, 1024, 3420, 1280)]
CPU_IMPLS = ("nn.Linear", "native", "native_op", "reference", "reference_op", "per_sample_loop")
GPU_IMPLS = ("nn.Linear", "native", "native_op", "triton", "triton_op")
NUM_BASES = 4


def _forward(impl: str, layer, linear, x, cu):
    """A zero-argument callable computing ``impl``'s output for the tokens x with boundaries cu."""
    if impl == "nn.Linear":
        return functools.partial(linear, x)
    if impl == "per_sample_loop":
        return functools.partial(per_sample_loop, layer, x, cu)
    backend = impl.removesuffix("_op")
    if impl == backend:
        layer.backend = backend
        return functools.partial(layer, x, cu)
    with torch.no_grad():  # the op alone: modulations and bases as fixed leaves
        modulations = layer.KSM_Global(pack(x, cu).sample_means(compute_dtype(x.dtype)))
    a_in, a_out, beta = (t.detach().requires_grad_(x.requires_grad) for t in modulations)
    bases = layer.bases(x.dtype).detach().requires_grad_(x.requires_grad)
    return functools.partial(fdlinear, x, bases, a_in, a_out, beta, layer.bias, cu, backend=backend)


def _step(forward, backward: bool):
    def run():
        if not backward:
            with torch.no_grad():
                forward()
            return
        forward().sum().backward()

    return run


def _bench(benchmark, impl, case, backward, device, dtype):
    name, samples, tokens, d_in, d_out = case
    if impl == "per_sample_loop" and samples > 64:
        pytest.skip("the per-sample loop over 4,096 one-row samples takes minutes per round")
    if impl.removesuffix("_op") not in ("nn.Linear", "per_sample_loop", *available_backends()):
        pytest.skip(f"backend {impl} is not available")
    layer = active_layer(d_in, d_out, NUM_BASES, dtype, device).train()
    linear = nn.Linear(d_in, d_out, device=device, dtype=dtype)
    x, cu = packed_tokens(samples, tokens, d_in, dtype, device)
    x.requires_grad_(backward)
    run = _step(_forward(impl, layer, linear, x, cu), backward)
    benchmark.group = f"native | {name} K={NUM_BASES} {'fwd+bwd' if backward else 'fwd'} {str(dtype)[6:]}"
    benchmark.extra_info["impl"] = impl
    benchmark.extra_info["cpu_isa"] = torch.ops.fdlinear_native.cpu_isa()
    if device == "cuda":
        def synced():
            run()
            torch.cuda.synchronize()

        benchmark.pedantic(synced, rounds=20, warmup_rounds=3)
    else:
        benchmark.pedantic(run, rounds=15, warmup_rounds=2)


@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "fwd+bwd"])
@pytest.mark.parametrize("impl", CPU_IMPLS)
@pytest.mark.parametrize("case", CPU_CASES, ids=[c[0] for c in CPU_CASES])
def test_cpu(benchmark, case, impl, backward):
    _bench(benchmark, impl, case, backward, "cpu", torch.float32)


PAIRED_ROUNDS, PAIRED_WARMUP = 40, 3


@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "fwd+bwd"])
@pytest.mark.parametrize("case", CPU_CASES[:2], ids=[c[0] for c in CPU_CASES[:2]])
def test_cpu_paired(benchmark, case, backward):
    """The issue's target ratios with the machine's drift cancelled: nn.Linear and the native op called in
    alternating order within each round; ``extra_info["paired_ratio"]`` is the ratio of their medians."""
    name, samples, tokens, d_in, d_out = case
    layer = active_layer(d_in, d_out, NUM_BASES).train()
    linear = nn.Linear(d_in, d_out)
    x, cu = packed_tokens(samples, tokens, d_in)
    x.requires_grad_(backward)
    runs = {impl: _step(_forward(impl, layer, linear, x, cu), backward) for impl in ("nn.Linear", "native_op")}
    benchmark.group = f"native paired | {name} K={NUM_BASES} {'fwd+bwd' if backward else 'fwd'} float32"
    medians = alternating_rounds(benchmark, runs, PAIRED_ROUNDS, PAIRED_WARMUP)
    op_ms, linear_ms = medians["native_op"], medians["nn.Linear"]
    benchmark.extra_info.update(impl="native_op + nn.Linear, paired", op_ms=op_ms, linear_ms=linear_ms,
                                paired_ratio=op_ms / linear_ms, cpu_isa=torch.ops.fdlinear_native.cpu_isa())


@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "fwd+bwd"])
@pytest.mark.parametrize("form", ["mix", "expand"])
@pytest.mark.parametrize("tokens", [2, 4, 8, 16])
def test_cpu_form_crossover(benchmark, tokens, form, backward):
    """The native op's two forms on 2,048 rows of 512->512, K=4, against the sample length."""
    samples, features = 2048 // tokens, 512
    layer = active_layer(features, features, NUM_BASES)
    x, cu = packed_tokens(samples, tokens, features)
    x.requires_grad_(backward)
    with torch.no_grad():
        modulations = layer.KSM_Global(pack(x, cu).sample_means(torch.float32))
    a_in, a_out, beta = (t.detach().requires_grad_(backward) for t in modulations)
    bases = layer.bases().detach().requires_grad_(backward)
    op = torch.ops.fdlinear.native_forward
    run = _step(functools.partial(op, x, bases, a_in, a_out, beta, None, cu, form), backward)
    benchmark.group = f"native form crossover | {tokens} rows/sample 512->512 K=4 {'fwd+bwd' if backward else 'fwd'}"
    benchmark.extra_info["impl"] = f"native {form}"
    benchmark.pedantic(run, rounds=5, warmup_rounds=1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "fwd+bwd"])
@pytest.mark.parametrize("impl", GPU_IMPLS)
@pytest.mark.parametrize("case", GPU_CASES, ids=[c[0] for c in GPU_CASES])
def test_gpu(benchmark, case, impl, backward):
    _bench(benchmark, impl, case, backward, "cuda", torch.bfloat16)
