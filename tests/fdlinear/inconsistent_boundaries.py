"""Run as a script by tests/test_validation.py (a separate process, because the failure this guards against is
memory corruption that kills the process): inconsistent boundaries reach every entry point — eager and
compiled layer, functional, raw custom ops, the helpers — and each must raise ValueError naming cu_seqlens (or,
for the helpers, return in-range indices). Prints one line per check and "ALL OK" at the end."""

from __future__ import annotations

import functools
import sys

import torch

from fdlinear import FDLinear, fdlinear
from fdlinear.backends import available_backends
from fdlinear.backends.triton.schedule import row_tiles
from fdlinear.segments import Segments, sample_of_rows, segment_mean

BAD = [[0, 30, 10], [0, -5, 10], [0, 3, 12], [5, 7, 10], [0, 10, 3, 10], [0, 2**40, 10], [0, 3, 2**62]]
ROWS, D_IN, D_OUT, K = 10, 16, 8, 3


def expect_value_error(what: str, function, *args) -> None:
    try:
        function(*args)
    except ValueError as error:
        assert "cu_seqlens" in str(error), f"{what}: {error}"
        return
    raise AssertionError(f"{what}: no ValueError")


def op_args(num_samples: int) -> list[torch.Tensor]:
    return [torch.randn(ROWS, D_IN), torch.randn(K, D_OUT, D_IN), torch.rand(num_samples, D_IN),
            torch.rand(num_samples, D_OUT), torch.rand(num_samples, K), torch.randn(D_OUT)]


def main(backends: list[str]) -> None:
    x = torch.randn(ROWS, D_IN)
    for values in BAD:
        cu = torch.tensor(values)
        samples = sample_of_rows(cu, ROWS)
        assert samples.shape == (ROWS,) and bool(((samples >= 0) & (samples < len(values) - 1)).all()), values
        segment_mean(x, cu)
        row_tiles(cu, ROWS, 4)
    assert sample_of_rows(torch.tensor([0]), ROWS).tolist() == [0] * ROWS  # no samples: still in range
    assert segment_mean(x, torch.tensor([0])).shape == (0, D_IN)
    print("helpers: in range on inconsistent boundaries")
    for backend in backends:
        layer = FDLinear(D_IN, D_OUT, num_bases=K, backend=backend)
        compiled = torch.compile(layer, fullgraph=True)
        compiled_op = torch.compile(functools.partial(fdlinear, backend=backend), fullgraph=True)
        raw_forward = getattr(torch.ops.fdlinear, f"{backend}_forward")
        raw_backward = getattr(torch.ops.fdlinear, f"{backend}_backward")
        good = torch.tensor([0, 4, 10])
        compiled(x, good).sum().backward()
        for values in BAD:
            cu = torch.tensor(values)
            args = op_args(len(values) - 1)
            expect_value_error(f"{backend} eager layer {values}", layer, x, cu)
            expect_value_error(f"{backend} compiled layer {values}", compiled, x, cu)
            expect_value_error(f"{backend} compiled op {values}", compiled_op, *args, cu)
            grad_y = torch.randn(ROWS, D_OUT)
            expect_value_error(f"{backend} raw backward {values}", raw_backward, grad_y, *args, cu, [True] * 6, "auto")
            for form in ("auto", "mix", "expand"):
                expect_value_error(f"{backend} raw forward {form} {values}", raw_forward, *args, cu, form)
        print(f"{backend}: ValueError everywhere")
    assert Segments.from_cu_seqlens(torch.tensor([0, 4, 10]), ROWS).max_length == 6
    print("ALL OK")


if __name__ == "__main__":
    requested = sys.argv[1:] or available_backends()
    main([name for name in requested if name in available_backends()])
