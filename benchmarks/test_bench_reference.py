"""FDLinear (reference backend) vs nn.Linear vs the per-sample-loop baseline, forward and forward+backward.

CPU shapes: 8 samples x 256 tokens, 512→1024, K=4, fp32; the per-row case (4,096 rows, 256→256).
GPU shapes (skipped without CUDA): the Qwen2.5-VL ViT projections, 8 images x 1024 tokens, bf16.
"""

from __future__ import annotations

import pytest
import torch
from conftest import active_layer, packed_tokens
from per_sample_loop import per_sample_loop
from torch import nn

CPU_CASES = [("8x256 512->1024", 8, 256, 512, 1024), ("per-row 4096 256->256", 4096, 1, 256, 256)]
GPU_CASES = [("qkv 1280->3840", 8, 1024, 1280, 3840), ("up 1280->3420", 8, 1024, 1280, 3420),
             ("down 3420->1280", 8, 1024, 3420, 1280)]
IMPLS = ("nn.Linear", "reference", "per_sample_loop")


def _runner(impl: str, layer, linear, x, cu, backward: bool):
    def forward():
        if impl == "nn.Linear":
            return linear(x)
        if impl == "reference":
            return layer(x, cu)
        return per_sample_loop(layer, x, cu)

    def step():
        if not backward:
            with torch.no_grad():
                return forward()
        x.grad = None
        forward().sum().backward()

    return step


def _bench(benchmark, impl, case, backward, device, dtype, num_bases=4):
    name, samples, tokens, d_in, d_out = case
    if impl == "per_sample_loop" and samples > 64:
        pytest.skip("the per-sample loop over 4,096 one-row samples takes minutes per round")
    layer = active_layer(d_in, d_out, num_bases, dtype, device).train()
    layer.backend = "reference"  # the default on this device may be another backend
    linear = nn.Linear(d_in, d_out, device=device, dtype=dtype)
    x, cu = packed_tokens(samples, tokens, d_in, dtype, device)
    x.requires_grad_(backward)
    step = _runner(impl, layer, linear, x, cu, backward)
    benchmark.group = f"{name} K={num_bases} {'fwd+bwd' if backward else 'fwd'} {str(dtype)[6:]}"
    benchmark.extra_info["impl"] = impl
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        benchmark.extra_info["peak_mb"] = torch.cuda.max_memory_allocated() / 2**20

        def synced():
            step()
            torch.cuda.synchronize()

        benchmark.pedantic(synced, rounds=20, warmup_rounds=3)
    else:
        benchmark.pedantic(step, rounds=9, warmup_rounds=1)


@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "fwd+bwd"])
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", CPU_CASES, ids=[c[0] for c in CPU_CASES])
def test_cpu(benchmark, case, impl, backward):
    _bench(benchmark, impl, case, backward, "cpu", torch.float32)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "fwd+bwd"])
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", GPU_CASES, ids=[c[0] for c in GPU_CASES])
def test_gpu(benchmark, case, impl, backward):
    _bench(benchmark, impl, case, backward, "cuda", torch.bfloat16)


def test_per_sample_loop_matches_fdlinear():
    """The baseline computes the same function (so its timings compare like with like)."""
    layer = active_layer(24, 16, 4, torch.float64)
    x, cu = packed_tokens(3, 5, 24, torch.float64)
    cu = torch.tensor([0, 4, 4, 15])
    torch.testing.assert_close(per_sample_loop(layer, x, cu), layer(x, cu), rtol=1e-10, atol=1e-10)
