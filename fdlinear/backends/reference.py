"""Reference backend: plain, vectorised PyTorch forward and backward of the FDLinear op (docs/design.md §2).

Two algebraically identical forms, chosen per call by arithmetic cost:

* ``mix``: per sample, ``M_s = Σ_k β_sk B_k`` is formed and applied to the sample's rows
  (samples padded to the longest one, one batched matmul). Costs ``S·L_max·d_in·d_out`` plus the mixing.
* ``expand``: ``y = a_out ⊙ Σ_k β_k (B_k (a_in ⊙ x))`` — K matmuls over all rows, no per-sample
  matrix at all. Cheaper when samples are short (the per-row case).

Nothing per-sample is saved for backward: the backward recomputes what it needs from the inputs.
All arithmetic runs in ``x.dtype``; gradients are returned in the dtype of their input.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fdlinear.segments import Segments

FORMS = ("auto", "mix", "expand")


def choose_form(segments: Segments, num_bases: int) -> str:
    """``"expand"`` when K matmuls over the rows cost less than padded per-sample mixing, else ``"mix"``."""
    mix_cost = segments.num_samples * (segments.max_length + num_bases)
    expand_cost = segments.num_rows * num_bases
    return "expand" if expand_cost < mix_cost else "mix"


def _resolve(form: str, segments: Segments, num_bases: int) -> str:
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    return choose_form(segments, num_bases) if form == "auto" else form


def _mixed(beta: Tensor, bases: Tensor) -> Tensor:
    """β (S, K), bases (K, d_out, d_in) → M (S, d_out, d_in)."""
    return torch.einsum("sk,koi->soi", beta, bases)


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
    """y (T, d_out) for packed x (T, d_in), bases (K, d_out, d_in), a_in (S, d_in), a_out (S, d_out), β (S, K)."""
    dtype = x.dtype
    segments = Segments.from_cu_seqlens(cu_seqlens, x.shape[0])
    bases, a_in, a_out, beta = (t.to(dtype) for t in (bases, a_in, a_out, beta))
    if _resolve(form, segments, bases.shape[0]) == "expand":
        scaled = x * segments.per_row(a_in)
        per_basis = (scaled @ bases.flatten(0, 1).T).unflatten(1, bases.shape[:2])  # (T, K, d_out)
        y = torch.einsum("tko,tk->to", per_basis, segments.per_row(beta)) * segments.per_row(a_out)
    else:
        padded = segments.pad(x) * a_in.unsqueeze(1)
        y = segments.unpad(torch.bmm(padded, _mixed(beta, bases).transpose(1, 2)) * a_out.unsqueeze(1))
    if bias is not None:
        y = y + bias.to(dtype)
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
    """Gradients (dx, dbases, da_in, da_out, dβ, dbias) of ``forward``; None where ``needs_grad`` is False.

    Per sample, with G the upstream rows, M = Σ_k β_k B_k, u = a_in, v = a_out, H' = Gᵀ X:
    dX = ((G ⊙ v) M) ⊙ u; dβ_k = Σ v u B_k H'; dB_k = Σ_s β_sk (v ⊙ H' ⊙ u);
    dv = Σ_i M u H'; du = Σ_o v M H'; dbias = Σ_t G_t.
    """
    dtype = x.dtype
    segments = Segments.from_cu_seqlens(cu_seqlens, x.shape[0])
    need_x, need_bases, need_in, need_out, need_beta, need_bias = needs_grad
    grad_y = grad_y.to(dtype)
    b, u, v, bt = (t.to(dtype) for t in (bases, a_in, a_out, beta))
    dx = dbases = da_in = da_out = dbeta = None
    if _resolve(form, segments, b.shape[0]) == "expand":
        u_rows, v_rows, beta_rows = segments.per_row(u), segments.per_row(v), segments.per_row(bt)
        scaled = x * u_rows
        flat_bases = b.flatten(0, 1)
        grad_scaled_out = grad_y * v_rows
        grad_per_basis = grad_scaled_out.unsqueeze(1) * beta_rows.unsqueeze(2)  # (T, K, d_out)
        if need_out or need_beta:
            per_basis = (scaled @ flat_bases.T).unflatten(1, b.shape[:2])
            if need_out:
                da_out = segments.sum(grad_y * torch.einsum("tko,tk->to", per_basis, beta_rows))
            if need_beta:
                dbeta = segments.sum(torch.einsum("tko,to->tk", per_basis, grad_scaled_out))
        if need_x or need_in:
            grad_scaled = grad_per_basis.flatten(1) @ flat_bases
            dx = grad_scaled * u_rows if need_x else None
            da_in = segments.sum(grad_scaled * x) if need_in else None
        if need_bases:
            dbases = (grad_per_basis.flatten(1).T @ scaled).unflatten(0, b.shape[:2])
    else:
        mixed = _mixed(bt, b)
        grad_padded = segments.pad(grad_y)
        x_padded = segments.pad(x)
        if need_x:
            dx = segments.unpad(torch.bmm(grad_padded * v.unsqueeze(1), mixed) * u.unsqueeze(1))
        if need_bases or need_in or need_out or need_beta:
            outer = torch.bmm(grad_padded.transpose(1, 2), x_padded)  # H' (S, d_out, d_in)
            if need_in or need_out:
                weighted = mixed * outer
                da_out = torch.einsum("soi,si->so", weighted, u) if need_out else None
                da_in = torch.einsum("soi,so->si", weighted, v) if need_in else None
            if need_bases or need_beta:
                modulated = outer * v.unsqueeze(2) * u.unsqueeze(1)
                dbeta = torch.einsum("soi,koi->sk", modulated, b) if need_beta else None
                dbases = torch.einsum("sk,soi->koi", bt, modulated) if need_bases else None
    dbias = grad_y.sum(0) if need_bias else None
    return dx, dbases, da_in, da_out, dbeta, dbias
