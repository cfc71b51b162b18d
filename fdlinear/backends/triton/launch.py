"""Python launchers of the Triton kernels: grids, strides and flags. Every tensor argument must be
contiguous; modulation and gradient buffers may be of any floating dtype (the kernels accumulate in
``accumulation_dtype``).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from fdlinear.backends.triton.configs import expand_block_m, mix_block_m
from fdlinear.backends.triton.grad_kernels import expanded_basis_grad_kernel, mixed_weight_grad_kernel
from fdlinear.backends.triton.matmul_kernels import INTERPRETED, expanded_matmul_kernel, mixed_matmul_kernel
from fdlinear.backends.triton.schedule import row_tiles
from fdlinear.segments import BOUNDARY_CACHE

__all__ = [
    "INTERPRETED",
    "accumulation_dtype",
    "language_interpreted",
    "expanded_basis_grad",
    "expanded_matmul",
    "mixed_matmul",
    "mixed_weight_grad",
]


def language_interpreted() -> bool:
    """Whether triton.language's own jit helpers (tl.cdiv, tl.sum, ...) run in the interpreter, i.e. whether
    TRITON_INTERPRET was set before triton was imported."""
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(tl.cdiv, InterpretedFunction)


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 for float64 inputs, float32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _kernel_dtypes(x: Tensor) -> dict:
    """Accumulator dtype and fp32 dot precision: IEEE fp32 unless PyTorch allows TF32 matmuls on CUDA
    (``torch.backends.cuda.matmul.allow_tf32``), the same arithmetic as ``x @ w`` in PyTorch."""
    tf32 = x.is_cuda and x.dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32
    return {"ACC_DTYPE": tl.float64 if x.dtype == torch.float64 else tl.float32,
            "INPUT_PRECISION": "tf32" if tf32 else "ieee"}


def _basis_strides(bases: Tensor, transposed: bool) -> tuple[int, int, int]:
    """(stride_k, stride_n, stride_r) of B read as (K, n, r): (K, d_out, d_in), or (K, d_in, d_out) transposed."""
    stride_k, stride_o, stride_i = bases.stride()
    return (stride_k, stride_i, stride_o) if transposed else (stride_k, stride_o, stride_i)


def mixed_matmul(
    x: Tensor,
    bases: Tensor,
    in_scale: Tensor,
    out_scale: Tensor,
    beta: Tensor,
    bias: Tensor | None,
    cu_seqlens: Tensor,
    transposed: bool,
    out: Tensor,
) -> Tensor:
    """Mix form: ``out[t] = out_scale[s] ⊙ ((in_scale[s] ⊙ M_s) x_t) (+ bias)`` for every row t of sample s.

    Args:
        x: (T, R) rows; R = d_in (forward) or d_out (``transposed``, input gradient).
        bases: (K, d_out, d_in); M_s = Σ_k β_sk B_k, applied as (d_out, d_in) or transposed.
        in_scale: (S, R), out_scale: (S, N), beta: (S, K), bias: (N,) or None.
        cu_seqlens: (S+1,) sample boundaries.
        out: (T, N) result buffer, written in full.
    """
    num_rows, r_size = x.shape
    n_size = out.shape[1]
    num_samples = cu_seqlens.shape[0] - 1
    block_m = mix_block_m(num_rows, num_samples, INTERPRETED)
    schedule = BOUNDARY_CACHE.get(cu_seqlens, ("row_tiles", num_rows, block_m),
                                  lambda: row_tiles(cu_seqlens, num_rows, block_m))
    if schedule.num_tiles == 0 or n_size == 0:
        return out
    stride_k, stride_n, stride_r = _basis_strides(bases, transposed)

    def grid(meta: dict) -> tuple[int]:
        return (schedule.num_tiles * triton.cdiv(n_size, meta["BLOCK_N"]),)

    mixed_matmul_kernel[grid](
        x, bases, in_scale, out_scale, beta, bias if bias is not None else out, out,
        schedule.tile_sample, schedule.tile_start, cu_seqlens,
        schedule.num_tiles, n_size, r_size,
        x.stride(0), stride_k, stride_n, stride_r, in_scale.stride(0), out_scale.stride(0), beta.stride(0),
        out.stride(0),
        NUM_BASES=bases.shape[0], HAS_BIAS=bias is not None, BLOCK_M=schedule.block_m, **_kernel_dtypes(x),
    )
    return out


def expanded_matmul(
    x: Tensor,
    bases: Tensor,
    in_scale: Tensor,
    out_scale: Tensor,
    beta: Tensor,
    sample_of_row: Tensor,
    transposed: bool,
    bias: Tensor | None = None,
    out: Tensor | None = None,
    partner: Tensor | None = None,
    scale_grad: Tensor | None = None,
    beta_grad: Tensor | None = None,
) -> None:
    """Expand form over rows of any samples: with Z_k = B_k (in_scale ⊙ x_t) and Q = Σ_k β_k Z_k,
    writes ``out[t] = out_scale ⊙ Q (+ bias)`` when ``out`` is given, adds ``partner[t] ⊙ Q`` into
    ``scale_grad[s]`` and ``Σ partner[t] ⊙ out_scale ⊙ Z_k`` into ``beta_grad[s, k]`` when those are given.

    Args:
        x: (T, R); bases (K, d_out, d_in), read transposed when ``transposed``; in_scale (S, R);
        out_scale (S, N); beta (S, K); sample_of_row (T,) int32; bias (N,) or None;
        out (T, N) or None; partner (T, N) (needed by the gradients); scale_grad (S, N) and
        beta_grad (S, K) accumulation buffers (zeroed by the caller) or None.
    """
    num_rows, r_size = x.shape
    n_size = bases.shape[2] if transposed else bases.shape[1]
    if num_rows == 0 or n_size == 0:
        return
    stride_k, stride_n, stride_r = _basis_strides(bases, transposed)
    unused = x.new_empty(0)
    partner_t = partner if partner is not None else unused
    scale_grad_t = scale_grad if scale_grad is not None else unused
    beta_grad_t = beta_grad if beta_grad is not None else unused
    out_t = out if out is not None else unused
    block_m = expand_block_m(INTERPRETED)

    def grid(meta: dict) -> tuple[int]:
        return (triton.cdiv(num_rows, block_m) * triton.cdiv(n_size, meta["BLOCK_N"]),)

    expanded_matmul_kernel[grid](
        x, bases, in_scale, out_scale, beta, bias if bias is not None else unused, out_t,
        partner_t, scale_grad_t, beta_grad_t, sample_of_row,
        num_rows, n_size, r_size,
        x.stride(0), stride_k, stride_n, stride_r, in_scale.stride(0), out_scale.stride(0), beta.stride(0),
        out_t.stride(0) if out is not None else 0, partner_t.stride(0) if partner is not None else 0,
        scale_grad_t.stride(0) if scale_grad is not None else 0,
        beta_grad_t.stride(0) if beta_grad is not None else 0,
        NUM_BASES=bases.shape[0], HAS_BIAS=bias is not None, STORE_OUT=out is not None,
        SCALE_GRAD=scale_grad is not None, BETA_GRAD=beta_grad is not None, BLOCK_M=block_m,
        **_kernel_dtypes(x),
    )


def mixed_weight_grad(
    grad_y: Tensor,
    x: Tensor,
    bases: Tensor,
    a_in: Tensor,
    a_out: Tensor,
    beta: Tensor,
    cu_seqlens: Tensor,
    bases_grad: Tensor | None,
    a_in_grad: Tensor | None,
    a_out_grad: Tensor | None,
    beta_grad: Tensor | None,
) -> None:
    """Mix form, weight side: per sample H' = G_sᵀ X_s reduced into the given buffers (None = not needed).

    Args:
        grad_y: (T, d_out), x: (T, d_in), bases: (K, d_out, d_in), a_in (S, d_in), a_out (S, d_out), beta (S, K).
        bases_grad: (K, d_out, d_in) written in full; a_in_grad (S, d_in), a_out_grad (S, d_out),
            beta_grad (S, K): zeroed accumulation buffers.
    """
    num_bases, d_out, d_in = bases.shape
    if bases_grad is None and a_in_grad is None and a_out_grad is None and beta_grad is None:
        return
    unused = x.new_empty(0)

    def grid(meta: dict) -> tuple[int, int]:
        return (triton.cdiv(d_out, meta["BLOCK_O"]), triton.cdiv(d_in, meta["BLOCK_I"]))

    buffers = [t if t is not None else unused for t in (bases_grad, a_in_grad, a_out_grad, beta_grad)]
    mixed_weight_grad_kernel[grid](
        grad_y, x, bases, a_in, a_out, beta, cu_seqlens, *buffers,
        cu_seqlens.shape[0] - 1, d_out, d_in,
        grad_y.stride(0), x.stride(0), *bases.stride(), a_in.stride(0), a_out.stride(0), beta.stride(0),
        buffers[1].stride(0) if a_in_grad is not None else 0,
        buffers[2].stride(0) if a_out_grad is not None else 0,
        buffers[3].stride(0) if beta_grad is not None else 0,
        NUM_BASES=num_bases, NUM_BASES_POW2=triton.next_power_of_2(num_bases),
        NEED_BASES=bases_grad is not None, NEED_IN=a_in_grad is not None, NEED_OUT=a_out_grad is not None,
        NEED_BETA=beta_grad is not None, **_kernel_dtypes(x),
    )


def expanded_basis_grad(
    grad_y: Tensor,
    x: Tensor,
    a_in: Tensor,
    a_out: Tensor,
    beta: Tensor,
    sample_of_row: Tensor,
    bases_grad: Tensor,
) -> None:
    """Expand form: ``bases_grad[k] = Σ_t (β_sk a_out_s ⊙ g_t)ᵀ (a_in_s ⊙ x_t)``, written in full.

    Args:
        grad_y: (T, d_out), x: (T, d_in), a_in (S, d_in), a_out (S, d_out), beta (S, K),
        sample_of_row: (T,) int32, bases_grad: (K, d_out, d_in).
    """
    num_bases, d_out, d_in = bases_grad.shape

    def grid(meta: dict) -> tuple[int, int, int]:
        return (triton.cdiv(d_out, meta["BLOCK_O"]), triton.cdiv(d_in, meta["BLOCK_I"]), num_bases)

    expanded_basis_grad_kernel[grid](
        grad_y, x, a_in, a_out, beta, sample_of_row, bases_grad,
        x.shape[0], d_out, d_in,
        grad_y.stride(0), x.stride(0), a_in.stride(0), a_out.stride(0), beta.stride(0),
        **_kernel_dtypes(x),
    )
