"""Where the time of an FDLinear layer goes on the CPU, in training: every part timed in the same rounds.

One round calls, in an order that alternates between rounds, nn.Linear on the same tokens, the whole FDLinear
layer (native backend, modulation active), its parts — the op alone (given bases and modulations), the basis
rebuild (spectrum -> K bases and its backward), the modulation (sample means -> a_in, a_out, β and back) — and the
per-sample-loop baseline. ``extra_info["paired_ms"]`` holds each part's median; the summary prints them with their
ratios to nn.Linear (and the loop's to the layer), so the ratios are free of the machine's drift between runs.
Shape of issue #18: 8 samples x 256 tokens, K = 4, fp32, 2 threads; 512->1024 and 1024->512.

    pytest benchmarks/test_bench_layer.py
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from conftest import active_layer, alternating_rounds, packed_tokens
from per_sample_loop import per_sample_loop
from torch import nn

from fdlinear.backends import available_backends
from fdlinear.functional import fdlinear, pack
from fdlinear.modulation import compute_dtype

pytestmark = pytest.mark.skipif("native" not in available_backends(), reason="the native extension is not built")

CASES = [("8x256 512->1024", 8, 256, 512, 1024), ("8x256 1024->512", 8, 256, 1024, 512)]
NUM_BASES, ROUNDS, WARMUP = 4, 25, 3


def _parts(d_in: int, d_out: int, samples: int, tokens: int, backward: bool) -> dict[str, Callable[[], None]]:
    """Zero-argument callables, one per part; each runs its forward (and backward with upstream gradients)."""
    layer = active_layer(d_in, d_out, NUM_BASES).train()
    layer.backend = "native"
    linear = nn.Linear(d_in, d_out)
    x, cu = packed_tokens(samples, tokens, d_in)
    x.requires_grad_(backward)
    grad_y = torch.randn(x.shape[0], d_out)
    with torch.no_grad():
        modulations = layer.KSM_Global(pack(x, cu).sample_means(compute_dtype(x.dtype)))
    a_in, a_out, beta = (t.detach().requires_grad_(backward) for t in modulations)
    bases = layer.bases(x.dtype).detach().requires_grad_(backward)
    grad_bases = torch.randn_like(bases)
    grad_modulations = [torch.randn_like(t) for t in modulations]

    def run(forward: Callable[[], object], grads) -> Callable[[], None]:
        def step() -> None:
            if not backward:
                with torch.no_grad():
                    forward()
                return
            outputs = forward()
            outputs = outputs if isinstance(outputs, tuple) else (outputs,)
            torch.autograd.backward(outputs, grads)
        return step

    return {
        "nn.Linear": run(lambda: linear(x), [grad_y]),
        "layer": run(lambda: layer(x, cu), [grad_y]),
        "op": run(lambda: fdlinear(x, bases, a_in, a_out, beta, layer.bias, cu, backend="native"), [grad_y]),
        "rebuild": run(lambda: layer.bases(x.dtype), [grad_bases]),
        "modulation": run(lambda: layer.KSM_Global(pack(x, cu).sample_means(compute_dtype(x.dtype))),
                          grad_modulations),
        "per_sample_loop": run(lambda: per_sample_loop(layer, x, cu), [grad_y]),
    }


@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "fwd+bwd"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_layer_breakdown(benchmark, case, backward):
    name, samples, tokens, d_in, d_out = case
    parts = _parts(d_in, d_out, samples, tokens, backward)
    if not backward:  # the bases are cached without grad: the rebuild costs nothing at inference
        parts.pop("rebuild")
    benchmark.group = f"layer breakdown | {name} K={NUM_BASES} {'fwd+bwd' if backward else 'fwd'} float32"
    paired_ms = alternating_rounds(benchmark, parts, ROUNDS, WARMUP)
    benchmark.extra_info.update(impl="breakdown, paired rounds", paired_ms=paired_ms,
                                cpu_isa=torch.ops.fdlinear_native.cpu_isa())
