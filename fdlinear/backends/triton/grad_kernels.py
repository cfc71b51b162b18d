"""Weight-side gradient kernels: everything that needs H'_s = G_sᵀ X_s (docs/design.md §2, "Backward").

``mixed_weight_grad_kernel`` (mix form): one program per (d_out tile, d_in tile) walks every sample's rows,
forms that sample's H' tile in registers and reduces it in its epilogue, never writing H' to memory:

* dB_k += β_sk (v ⊙ H' ⊙ u), accumulated across samples in registers and stored once (no atomics);
* dβ_sk += Σ B_k ⊙ (v ⊙ H' ⊙ u), da_out_s += Σ_i M ⊙ H' u, da_in_s += Σ_o v M ⊙ H'
  (partial sums over this tile, added atomically into (S, ·) fp32 buffers).

``expanded_basis_grad_kernel`` (expand form): dB_k = Σ_t (β_k v ⊙ g_t)ᵀ (u ⊙ x_t) as one GEMM over all rows
with per-row modulations.
"""

from __future__ import annotations

import triton
import triton.language as tl

from fdlinear.backends.triton.configs import basis_grad_configs, prune_by_registers, prune_expanded_basis_grad
from fdlinear.backends.triton.matmul_kernels import INTERPRETED


@triton.autotune(
    configs=basis_grad_configs(INTERPRETED),
    key=["d_out", "d_in", "NUM_BASES", "NEED_BASES", "NEED_IN", "NEED_OUT", "NEED_BETA", "INPUT_PRECISION"],
    prune_configs_by={"early_config_prune": prune_by_registers},
    reset_to_zero=["a_in_grad_ptr", "a_out_grad_ptr", "beta_grad_ptr"],
)
@triton.jit
def mixed_weight_grad_kernel(
    grad_ptr, x_ptr, bases_ptr, a_in_ptr, a_out_ptr, beta_ptr, cu_seqlens_ptr,
    bases_grad_ptr, a_in_grad_ptr, a_out_grad_ptr, beta_grad_ptr,
    num_samples, d_out, d_in,
    stride_g, stride_x, stride_bk, stride_bo, stride_bi, stride_in, stride_out, stride_beta,
    stride_in_grad, stride_out_grad, stride_beta_grad,
    NUM_BASES: tl.constexpr, NUM_BASES_POW2: tl.constexpr,
    NEED_BASES: tl.constexpr, NEED_IN: tl.constexpr, NEED_OUT: tl.constexpr, NEED_BETA: tl.constexpr,
    ACC_DTYPE: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    BLOCK_O: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_T: tl.constexpr,
):
    """Grid: (cdiv(d_out, BLOCK_O), cdiv(d_in, BLOCK_I)). dB is written as (K, d_out, d_in) in ACC_DTYPE."""
    outs = tl.program_id(0) * BLOCK_O + tl.arange(0, BLOCK_O)
    ins = tl.program_id(1) * BLOCK_I + tl.arange(0, BLOCK_I)
    out_mask = outs < d_out
    in_mask = ins < d_in
    tile_mask = out_mask[:, None] & in_mask[None, :]
    basis_offsets = outs[:, None] * stride_bo + ins[None, :] * stride_bi
    ks = tl.arange(0, NUM_BASES_POW2)
    k_mask = ks < NUM_BASES
    bases_grad = tl.zeros((NUM_BASES_POW2, BLOCK_O, BLOCK_I), dtype=ACC_DTYPE)
    for sample in range(0, num_samples):
        row_start = tl.load(cu_seqlens_ptr + sample).to(tl.int32)
        row_end = tl.load(cu_seqlens_ptr + sample + 1).to(tl.int32)
        if row_end > row_start:
            outer = tl.zeros((BLOCK_O, BLOCK_I), dtype=ACC_DTYPE)  # H' tile of this sample
            for t_start in range(row_start, row_end, BLOCK_T):
                rows = t_start + tl.arange(0, BLOCK_T)
                row_mask = rows < row_end
                rows64 = rows.to(tl.int64)
                grad_t = tl.load(grad_ptr + rows64[None, :] * stride_g + outs[:, None],
                                 mask=row_mask[None, :] & out_mask[:, None], other=0.0)
                x_rows = tl.load(x_ptr + rows64[:, None] * stride_x + ins[None, :],
                                 mask=row_mask[:, None] & in_mask[None, :], other=0.0)
                outer = tl.dot(grad_t, x_rows, outer, input_precision=INPUT_PRECISION, out_dtype=ACC_DTYPE)
            a_out = tl.load(a_out_ptr + sample * stride_out + outs, mask=out_mask, other=0.0).to(ACC_DTYPE)
            a_in = tl.load(a_in_ptr + sample * stride_in + ins, mask=in_mask, other=0.0).to(ACC_DTYPE)
            modulated = outer * a_out[:, None] * a_in[None, :]
            if NEED_BASES:
                beta = tl.load(beta_ptr + sample * stride_beta + ks, mask=k_mask, other=0.0).to(ACC_DTYPE)
                bases_grad += beta[:, None, None] * modulated[None, :, :]
            if NEED_IN or NEED_OUT or NEED_BETA:
                mixed = tl.zeros((BLOCK_O, BLOCK_I), dtype=ACC_DTYPE)
                for k in tl.static_range(NUM_BASES):
                    basis = tl.load(bases_ptr + k * stride_bk + basis_offsets, mask=tile_mask, other=0.0)
                    basis = basis.to(ACC_DTYPE)
                    if NEED_BETA:
                        tl.atomic_add(beta_grad_ptr + sample * stride_beta_grad + k, tl.sum(basis * modulated))
                    mixed += tl.load(beta_ptr + sample * stride_beta + k).to(ACC_DTYPE) * basis
                weighted = mixed * outer
                if NEED_OUT:
                    tl.atomic_add(a_out_grad_ptr + sample * stride_out_grad + outs,
                                  tl.sum(weighted * a_in[None, :], axis=1), mask=out_mask)
                if NEED_IN:
                    tl.atomic_add(a_in_grad_ptr + sample * stride_in_grad + ins,
                                  tl.sum(weighted * a_out[:, None], axis=0), mask=in_mask)
    if NEED_BASES:
        grad_ptrs = (bases_grad_ptr + ks[:, None, None] * (d_out * d_in)
                     + outs[None, :, None] * d_in + ins[None, None, :])
        tl.store(grad_ptrs, bases_grad.to(bases_grad_ptr.dtype.element_ty),
                 mask=k_mask[:, None, None] & tile_mask[None, :, :])


@triton.autotune(
    configs=basis_grad_configs(INTERPRETED),
    key=["d_out", "d_in", "INPUT_PRECISION"],
    prune_configs_by={"early_config_prune": prune_expanded_basis_grad},
)
@triton.jit
def expanded_basis_grad_kernel(
    grad_ptr, x_ptr, a_in_ptr, a_out_ptr, beta_ptr, sample_of_row_ptr, bases_grad_ptr,
    num_rows, d_out, d_in,
    stride_g, stride_x, stride_in, stride_out, stride_beta,
    ACC_DTYPE: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    BLOCK_O: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_T: tl.constexpr,
):
    """dB[k] = Σ_t (β[s,k] a_out[s] ⊙ g_t)ᵀ (a_in[s] ⊙ x_t) over all rows t (s = s(t)).
    Grid: (cdiv(d_out, BLOCK_O), cdiv(d_in, BLOCK_I), K). dB is written in ACC_DTYPE."""
    outs = tl.program_id(0) * BLOCK_O + tl.arange(0, BLOCK_O)
    ins = tl.program_id(1) * BLOCK_I + tl.arange(0, BLOCK_I)
    k = tl.program_id(2)
    out_mask = outs < d_out
    in_mask = ins < d_in
    acc = tl.zeros((BLOCK_O, BLOCK_I), dtype=ACC_DTYPE)
    for t_start in range(0, num_rows, BLOCK_T):
        rows = t_start + tl.arange(0, BLOCK_T)
        row_mask = rows < num_rows
        rows64 = rows.to(tl.int64)
        samples = tl.load(sample_of_row_ptr + rows, mask=row_mask, other=0).to(tl.int64)  # S·d may pass 2^31
        grad_mask = row_mask[None, :] & out_mask[:, None]
        grad_t = tl.load(grad_ptr + rows64[None, :] * stride_g + outs[:, None], mask=grad_mask, other=0.0)
        a_out = tl.load(a_out_ptr + samples[None, :] * stride_out + outs[:, None], mask=grad_mask, other=0.0)
        beta = tl.load(beta_ptr + samples * stride_beta + k, mask=row_mask, other=0.0).to(ACC_DTYPE)
        grad_scaled = (grad_t.to(ACC_DTYPE) * a_out.to(ACC_DTYPE) * beta[None, :]).to(grad_t.dtype)
        x_mask = row_mask[:, None] & in_mask[None, :]
        x_rows = tl.load(x_ptr + rows64[:, None] * stride_x + ins[None, :], mask=x_mask, other=0.0)
        a_in = tl.load(a_in_ptr + samples[:, None] * stride_in + ins[None, :], mask=x_mask, other=0.0)
        x_scaled = (x_rows.to(ACC_DTYPE) * a_in.to(ACC_DTYPE)).to(x_rows.dtype)
        acc = tl.dot(grad_scaled, x_scaled, acc, input_precision=INPUT_PRECISION, out_dtype=ACC_DTYPE)
    grad_ptrs = bases_grad_ptr + k * (d_out * d_in) + outs[:, None] * d_in + ins[None, :]
    tl.store(grad_ptrs, acc.to(bases_grad_ptr.dtype.element_ty), mask=out_mask[:, None] & in_mask[None, :])
