"""Plain forward and backward of the FDLinear op on the Triton kernels (contracts of
:mod:`fdlinear.backends.reference`). Registered as ``fdlinear::triton_forward/_backward`` by
:func:`fdlinear.backends.triton.register`.
"""

from __future__ import annotations

import contextlib
from types import ModuleType

import torch
from torch import Tensor

from fdlinear.backends.triton.schedule import choose_form
from fdlinear.segments import BOUNDARY_CACHE, sample_of_rows

FORMS = ("auto", "mix", "expand")


def kernels_for(device: torch.device) -> ModuleType:
    """The kernel launchers, imported (with triton) on first use.

    Triton reads ``TRITON_INTERPRET`` when it is imported and when a kernel is defined; importing both
    lazily lets that variable be set after ``fdlinear`` is imported, as long as nothing imported triton
    before. A CPU tensor needs the interpreter; a clear error says when it cannot have it.
    """
    from fdlinear.backends.triton import launch

    if device.type != "cuda" and not launch.INTERPRETED:
        raise RuntimeError(
            f"the triton backend runs on CUDA tensors, got a {device.type} tensor; on the CPU it runs only "
            "under the Triton interpreter: set TRITON_INTERPRET=1 before triton is first imported in the process"
        )
    if launch.INTERPRETED and not launch.language_interpreted():
        raise RuntimeError(
            "TRITON_INTERPRET=1 was set after triton had been imported, so triton's own language helpers are "
            "compiled, not interpreted; set it before triton is first imported (e.g. in the process environment)"
        )
    return launch


def on_device(device: torch.device) -> contextlib.AbstractContextManager:
    """Triton launches on the current CUDA device: make it ``device`` (tensors on cuda:1 while cuda:0 is current)."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _rows_sample(cu_seqlens: Tensor, num_rows: int) -> Tensor:
    """(T,) int32 sample of every row, as the expand kernels read it (once per boundaries tensor)."""
    return BOUNDARY_CACHE.get(cu_seqlens, ("sample_of_rows_int32", num_rows),
                              lambda: sample_of_rows(cu_seqlens, num_rows).to(torch.int32))


def _resolve(form: str, num_rows: int, num_samples: int, num_bases: int) -> str:
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    return choose_form(num_rows, num_samples, num_bases) if form == "auto" else form


def forward(
    x: Tensor,
    bases: Tensor,
    a_in: Tensor,
    a_out: Tensor,
    beta: Tensor,
    bias: Tensor | None,
    cu_seqlens: Tensor,
    form: str = "auto",
) -> Tensor:
    """y (T, d_out) in x's dtype for packed x (T, d_in), bases (K, d_out, d_in), a_in (S, d_in),
    a_out (S, d_out), β (S, K), bias (d_out,) or None, cu_seqlens (S+1,). Accumulates in fp32
    (fp64 for fp64 x)."""
    launch = kernels_for(x.device)
    with on_device(x.device):
        num_rows = x.shape[0]
        num_bases, d_out, _ = bases.shape
        form = _resolve(form, num_rows, a_in.shape[0], num_bases)
        x, bases, a_in, a_out, beta, cu_seqlens = (t.contiguous() for t in (x, bases, a_in, a_out, beta, cu_seqlens))
        bias = bias.contiguous() if bias is not None else None
        y = x.new_empty(num_rows, d_out)
        if y.numel() == 0:
            return y
        if form == "mix":
            return launch.mixed_matmul(x, bases, a_in, a_out, beta, bias, cu_seqlens, transposed=False, out=y)
        launch.expanded_matmul(x, bases, a_in, a_out, beta, _rows_sample(cu_seqlens, num_rows), transposed=False,
                               bias=bias, out=y)
        return y


def backward(
    grad_y: Tensor,
    x: Tensor,
    bases: Tensor,
    a_in: Tensor,
    a_out: Tensor,
    beta: Tensor,
    cu_seqlens: Tensor,
    needs_grad: tuple[bool, bool, bool, bool, bool, bool] = (True,) * 6,
    form: str = "auto",
) -> tuple[Tensor | None, ...]:
    """Gradients (dx, dbases, da_in, da_out, dβ, dbias) of :func:`forward`; None where ``needs_grad`` is False.

    dx and dbases come in the dtypes of x and bases; da_in, da_out, dβ and dbias are accumulated in fp32
    (fp64 for fp64 x) and cast by the caller.
    """
    launch = kernels_for(x.device)
    with on_device(x.device):
        need_x, need_bases, need_in, need_out, need_beta, need_bias = needs_grad
        num_rows, d_in = x.shape
        num_bases, d_out, _ = bases.shape
        num_samples = a_in.shape[0]
        form = _resolve(form, num_rows, num_samples, num_bases)
        grad_y = grad_y.to(x.dtype)
        grad_y, x, bases, a_in, a_out, beta, cu_seqlens = (
            t.contiguous() for t in (grad_y, x, bases, a_in, a_out, beta, cu_seqlens)
        )
        acc = launch.accumulation_dtype(x.dtype)

        def zeros(needed: bool, *shape: int) -> Tensor | None:
            return torch.zeros(*shape, dtype=acc, device=x.device) if needed else None

        runs_kernels = num_rows > 0 and d_in > 0 and d_out > 0
        written_in_full = torch.empty if runs_kernels else torch.zeros  # dx and dB: every element is stored
        dx = written_in_full(num_rows, d_in, dtype=x.dtype, device=x.device) if need_x else None
        # The kernels accumulate dB in registers and store it once, straight in the bases' dtype.
        dbases = written_in_full(num_bases, d_out, d_in, dtype=bases.dtype, device=x.device) if need_bases else None
        da_in = zeros(need_in, num_samples, d_in)
        da_out = zeros(need_out, num_samples, d_out)
        dbeta = zeros(need_beta, num_samples, num_bases)
        dbias = grad_y.sum(0, dtype=acc) if need_bias else None
        if not runs_kernels:
            return dx, dbases, da_in, da_out, dbeta, dbias
        if form == "mix":
            if need_x:
                launch.mixed_matmul(grad_y, bases, a_out, a_in, beta, None, cu_seqlens, transposed=True, out=dx)
            launch.mixed_weight_grad(grad_y, x, bases, a_in, a_out, beta, cu_seqlens, dbases, da_in, da_out, dbeta)
            return dx, dbases, da_in, da_out, dbeta, dbias
        rows_sample = _rows_sample(cu_seqlens, num_rows)
        if need_x or need_in:
            launch.expanded_matmul(grad_y, bases, a_out, a_in, beta, rows_sample, transposed=True,
                                   out=dx, partner=x, scale_grad=da_in)
        if need_out or need_beta:
            launch.expanded_matmul(x, bases, a_in, a_out, beta, rows_sample, transposed=False,
                                   partner=grad_y, scale_grad=da_out, beta_grad=dbeta)
        if need_bases:
            launch.expanded_basis_grad(grad_y, x, a_in, a_out, beta, rows_sample, dbases)
        return dx, dbases, da_in, da_out, dbeta, dbias
