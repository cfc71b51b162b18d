"""Shared test support: random op inputs and the docs/design.md §4 tolerance rule.

A backend's error against the float64 reference may be at most twice the error of the
reference backend run in the same dtype, plus a small floor relative to the magnitude.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode

import fdlinear  # noqa: F401  (registers the backends' custom ops)

GRAD_NAMES = ("x", "bases", "a_in", "a_out", "beta", "bias")
# Floor, relative to max|reference|: a few units in the last place of the dtype.
FLOOR = {torch.float64: 1e-12, torch.float32: 1e-6, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


@dataclass
class OpCase:
    """Inputs of one op call (all float64 masters; ``cast`` gives other dtypes)."""

    x: Tensor
    bases: Tensor
    a_in: Tensor
    a_out: Tensor
    beta: Tensor
    bias: Tensor | None
    cu_seqlens: Tensor
    grad_y: Tensor

    def tensors(self, dtype: torch.dtype, device: str | torch.device = "cpu", requires_grad: bool = True) -> list:
        """[x, bases, a_in, a_out, beta, bias] cast to ``dtype`` (modulations stay float32 for low precision),
        as fresh leaves."""
        mod_dtype = dtype if dtype in (torch.float64, torch.float32) else torch.float32
        out = []
        for name, t in zip(GRAD_NAMES, (self.x, self.bases, self.a_in, self.a_out, self.beta, self.bias)):
            if t is None:
                out.append(None)
                continue
            target = mod_dtype if name in ("a_in", "a_out", "beta") else dtype
            out.append(t.detach().to(device=device, dtype=target).requires_grad_(requires_grad))
        return out


def make_case(
    seqlens: list[int],
    d_in: int,
    d_out: int,
    num_bases: int,
    bias: bool = True,
    seed: int = 0,
) -> OpCase:
    """Random inputs for samples of the given lengths (empty and length-1 samples allowed)."""
    gen = torch.Generator().manual_seed(seed)
    total, samples = sum(seqlens), len(seqlens)

    def randn(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    def modulation(*shape: int) -> Tensor:  # 2·sigmoid of something: in (0, 2), like the module's
        return 2 * torch.sigmoid(randn(*shape))

    cu = torch.zeros(samples + 1, dtype=torch.int64)
    cu[1:] = torch.cumsum(torch.tensor(seqlens, dtype=torch.int64), 0)
    return OpCase(
        x=randn(total, d_in),
        bases=randn(num_bases, d_out, d_in) / d_in**0.5,
        a_in=modulation(samples, d_in),
        a_out=modulation(samples, d_out),
        beta=modulation(samples, num_bases),
        bias=randn(d_out) if bias else None,
        cu_seqlens=cu,
        grad_y=randn(total, d_out),
    )


def run_op(op, case: OpCase, dtype: torch.dtype, device="cpu", **kwargs) -> tuple[Tensor, list[Tensor | None]]:
    """Forward and backward of ``op(x, bases, a_in, a_out, beta, bias, cu_seqlens, **kwargs)``;
    returns (y, [dx, dbases, da_in, da_out, dbeta, dbias]) as float64 on the CPU."""
    inputs = case.tensors(dtype, device)
    y = op(*inputs, case.cu_seqlens.to(device), **kwargs)
    if y.requires_grad:
        y.backward(case.grad_y.to(device=device, dtype=y.dtype))
    grads = [None if t is None else (t.grad if t.grad is not None else torch.zeros_like(t)).double().cpu() for t in inputs]
    return y.detach().double().cpu(), grads


def reference_op(x, bases, a_in, a_out, beta, bias, cu_seqlens, form: str = "auto") -> Tensor:
    """The reference backend through its registered custom op (so gradients use its backward)."""
    return torch.ops.fdlinear.reference_forward(x, bases, a_in, a_out, beta, bias, cu_seqlens, form)


def assert_matches_reference(op, case: OpCase, dtype: torch.dtype, device="cpu", **kwargs) -> None:
    """Check ``op``'s output and six gradients against the float64 reference with the docs/design.md §4 rule."""
    exact_y, exact_grads = run_op(reference_op, case, torch.float64)
    same_y, same_grads = run_op(reference_op, case, dtype) if dtype != torch.float64 else (exact_y, exact_grads)
    test_y, test_grads = run_op(op, case, dtype, device, **kwargs)
    pairs = [("y", test_y, exact_y, same_y)]
    pairs += [(f"d{n}", t, e, s) for n, t, e, s in zip(GRAD_NAMES, test_grads, exact_grads, same_grads)]
    for name, actual, exact, same in pairs:
        if exact is None:
            assert actual is None, f"{name}: expected no gradient"
            continue
        assert actual is not None, f"{name}: gradient missing"
        assert actual.shape == exact.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(exact.shape)}"
        assert torch.isfinite(actual).all(), f"{name}: non-finite values"
        if exact.numel() == 0:
            continue
        scale = exact.abs().max().item()
        allowed = 2 * (same - exact).abs().max().item() + FLOOR[dtype] * max(scale, 1.0)
        error = (actual - exact).abs().max().item()
        assert error <= allowed, f"{name} ({dtype}): error {error:.3e} > allowed {allowed:.3e} (scale {scale:.3e})"




def naive_fdlinear(x, bases, a_in, a_out, beta, bias, cu_seqlens) -> Tensor:
    """Independent oracle: a Python loop over samples that materialises every W_s (autograd for gradients)."""
    outputs = []
    for s in range(cu_seqlens.shape[0] - 1):
        rows = x[int(cu_seqlens[s]) : int(cu_seqlens[s + 1])]
        mixed = (beta[s].to(x.dtype)[:, None, None] * bases.to(x.dtype)).sum(0)
        weight = a_out[s].to(x.dtype)[:, None] * mixed * a_in[s].to(x.dtype)[None, :]
        outputs.append(rows @ weight.T)
    y = torch.cat(outputs) if outputs else x.new_zeros(0, bases.shape[1])
    return y if bias is None else y + bias.to(x.dtype)


def assert_matches_oracle(op, case: OpCase, tolerance: float = 1e-11) -> None:
    """``op``'s float64 output and six gradients equal :func:`naive_fdlinear`'s within ``tolerance`` (the output within
    a tenth of it); a gradient the oracle does not have (no bias) must be absent."""
    y, grads = run_op(op, case, torch.float64)
    oracle_y, oracle_grads = run_op(naive_fdlinear, case, torch.float64)
    torch.testing.assert_close(y, oracle_y, rtol=tolerance / 10, atol=tolerance / 10)
    for name, got, want in zip(GRAD_NAMES, grads, oracle_grads):
        if want is None:
            assert got is None, f"d{name} should be absent"
        else:
            torch.testing.assert_close(got, want, rtol=tolerance, atol=tolerance, msg=f"d{name}")


class DispatchRecorder(TorchDispatchMode):
    """Records the ops dispatched while it is active (a custom op is one entry: the mode does not see inside it)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(func)
        return func(*args, **(kwargs or {}))

    @property
    def scalar_reads(self) -> int:
        """Reads of tensor values back to the host (``.item()``, ``int(t)``, ``bool(t)``): syncs on a GPU."""
        return self.ops.count(torch.ops.aten._local_scalar_dense.default)
