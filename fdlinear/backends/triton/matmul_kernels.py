"""Row-tile kernels: ``out = out_scale ⊙ (x · (in_scale ⊙ M)ᵀ) (+ bias)`` with M = Σ_k β_k B_k per sample.

One pair of kernels serves the forward pass and the input gradient, through the strides of B:

* forward: x = X, reduction over d_in, ``in_scale = a_in``, ``out_scale = a_out``, B read as (d_out, d_in);
* input gradient: x = G, reduction over d_out, ``in_scale = a_out``, ``out_scale = a_in``, B read transposed.

``mixed_matmul_kernel`` (mix form) covers one sample per program: for each reduction chunk the K basis
tiles are mixed with β_s in fp32 registers, scaled by ``in_scale`` and fed to the dot; the mixed weight
never reaches memory. ``expanded_matmul_kernel`` (expand form, short samples) covers rows of any samples:
``Σ_k β_k (B_k (in_scale ⊙ x))`` with per-row gathers of the modulations, and can also reduce
modulation gradients in its epilogue.
"""

from __future__ import annotations

import triton
import triton.language as tl

from fdlinear.backends.triton.configs import matmul_configs, prune_by_shared_memory, prune_expanded

INTERPRETED = bool(triton.knobs.runtime.interpret)


@triton.jit
def grouped_tile(pid, num_m, num_n, GROUP_M: tl.constexpr):
    """Program id → (m tile, n tile), walking GROUP_M m-tiles down each n column for L2 reuse."""
    per_group = GROUP_M * num_n
    first_m = (pid // per_group) * GROUP_M
    group_size = tl.minimum(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % per_group) % group_size
    pid_n = (pid % per_group) // group_size
    return pid_m, pid_n


@triton.autotune(
    configs=matmul_configs(INTERPRETED),
    key=["n_size", "r_size", "BLOCK_M", "NUM_BASES", "stride_br", "INPUT_PRECISION"],  # stride_br: dX reads B^T
    prune_configs_by={"early_config_prune": prune_by_shared_memory},
)
@triton.jit
def mixed_matmul_kernel(
    x_ptr, bases_ptr, in_scale_ptr, out_scale_ptr, beta_ptr, bias_ptr, out_ptr,
    tile_sample_ptr, tile_start_ptr, cu_seqlens_ptr,
    num_tiles, n_size, r_size,
    stride_x, stride_bk, stride_bn, stride_br, stride_in, stride_out, stride_beta, stride_y,
    NUM_BASES: tl.constexpr, HAS_BIAS: tl.constexpr, ACC_DTYPE: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_R: tl.constexpr, GROUP_M: tl.constexpr,
):
    """out[t, n] = out_scale[s, n] Σ_r x[t, r] in_scale[s, r] Σ_k β[s, k] B[k, n, r] (+ bias[n]) for the
    rows t of one scheduled tile of sample s. Grid: (num_tiles · cdiv(n_size, BLOCK_N),)."""
    pid_m, pid_n = grouped_tile(tl.program_id(0), num_tiles, tl.cdiv(n_size, BLOCK_N), GROUP_M)
    sample = tl.load(tile_sample_ptr + pid_m)
    if sample < 0:
        return
    row_start = tl.load(tile_start_ptr + pid_m)
    row_end = tl.load(cu_seqlens_ptr + sample + 1).to(tl.int32)
    rows = row_start + tl.arange(0, BLOCK_M)
    row_mask = rows < row_end
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    col_mask = cols < n_size
    x_rows = x_ptr + rows.to(tl.int64)[:, None] * stride_x
    beta_row = beta_ptr + sample * stride_beta
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
    for r_start in range(0, r_size, BLOCK_R):
        red = r_start + tl.arange(0, BLOCK_R)
        red_mask = red < r_size
        x_tile = tl.load(x_rows + red[None, :], mask=row_mask[:, None] & red_mask[None, :], other=0.0)
        basis_offsets = red[:, None] * stride_br + cols[None, :] * stride_bn
        basis_mask = red_mask[:, None] & col_mask[None, :]
        mixed = tl.zeros((BLOCK_R, BLOCK_N), dtype=ACC_DTYPE)
        for k in tl.static_range(NUM_BASES):
            basis = tl.load(bases_ptr + k * stride_bk + basis_offsets, mask=basis_mask, other=0.0)
            mixed += tl.load(beta_row + k).to(ACC_DTYPE) * basis.to(ACC_DTYPE)
        in_scale = tl.load(in_scale_ptr + sample * stride_in + red, mask=red_mask, other=0.0).to(ACC_DTYPE)
        mixed = mixed * in_scale[:, None]
        acc = tl.dot(x_tile, mixed.to(x_tile.dtype), acc, input_precision=INPUT_PRECISION, out_dtype=ACC_DTYPE)
    out_scale = tl.load(out_scale_ptr + sample * stride_out + cols, mask=col_mask, other=0.0).to(ACC_DTYPE)
    acc = acc * out_scale[None, :]
    if HAS_BIAS:
        acc += tl.load(bias_ptr + cols, mask=col_mask, other=0.0).to(ACC_DTYPE)[None, :]
    out_ptrs = out_ptr + rows.to(tl.int64)[:, None] * stride_y + cols[None, :]
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=row_mask[:, None] & col_mask[None, :])


@triton.jit
def scaled_rows_dot(
    acc, x_rows, in_scale_rows, basis_ptr, row_scale, row_mask, cols, col_mask, r_size, stride_bn, stride_br,
    ACC_DTYPE: tl.constexpr, INPUT_PRECISION: tl.constexpr, BLOCK_R: tl.constexpr,
):
    """acc + Σ_r (row_scale[t] in_scale[t, r] x[t, r]) B[n, r] over the whole reduction, for one basis B."""
    for r_start in range(0, r_size, BLOCK_R):
        red = r_start + tl.arange(0, BLOCK_R)
        red_mask = red < r_size
        in_mask = row_mask[:, None] & red_mask[None, :]
        x_tile = tl.load(x_rows + red[None, :], mask=in_mask, other=0.0)
        in_scale = tl.load(in_scale_rows + red[None, :], mask=in_mask, other=0.0).to(ACC_DTYPE)
        scaled = (x_tile.to(ACC_DTYPE) * (in_scale * row_scale[:, None])).to(x_tile.dtype)
        basis_ptrs = basis_ptr + red[:, None] * stride_br + cols[None, :] * stride_bn
        basis = tl.load(basis_ptrs, mask=red_mask[:, None] & col_mask[None, :], other=0.0)
        acc = tl.dot(scaled, basis.to(x_tile.dtype), acc, input_precision=INPUT_PRECISION, out_dtype=ACC_DTYPE)
    return acc


@triton.autotune(
    configs=matmul_configs(INTERPRETED),
    key=["n_size", "r_size", "BLOCK_M", "NUM_BASES", "STORE_OUT", "SCALE_GRAD", "BETA_GRAD", "stride_br",
         "INPUT_PRECISION"],
    prune_configs_by={"early_config_prune": prune_expanded},
    reset_to_zero=["scale_grad_ptr", "beta_grad_ptr"],
)
@triton.jit
def expanded_matmul_kernel(
    x_ptr, bases_ptr, in_scale_ptr, out_scale_ptr, beta_ptr, bias_ptr, out_ptr,
    partner_ptr, scale_grad_ptr, beta_grad_ptr, sample_of_row_ptr,
    num_rows, n_size, r_size,
    stride_x, stride_bk, stride_bn, stride_br, stride_in, stride_out, stride_beta, stride_y, stride_p,
    stride_sg, stride_bg,
    NUM_BASES: tl.constexpr, HAS_BIAS: tl.constexpr, STORE_OUT: tl.constexpr,
    SCALE_GRAD: tl.constexpr, BETA_GRAD: tl.constexpr, ACC_DTYPE: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_R: tl.constexpr, GROUP_M: tl.constexpr,
):
    """For rows t of any samples s(t), with Z_k[t, n] = Σ_r B[k, n, r] in_scale[s, r] x[t, r] and
    Q = Σ_k β[s, k] Z_k:

    * STORE_OUT:  out[t, n] = out_scale[s, n] Q[t, n] (+ bias[n]);
    * SCALE_GRAD: scale_grad[s, n] += partner[t, n] Q[t, n]                (atomics, per sample);
    * BETA_GRAD:  beta_grad[s, k] += Σ_n partner[t, n] out_scale[s, n] Z_k[t, n]   (atomics, per sample).

    Without BETA_GRAD, β is folded into the rows before the dot (one accumulator for all K).
    Grid: (cdiv(num_rows, BLOCK_M) · cdiv(n_size, BLOCK_N),).
    """
    pid_m, pid_n = grouped_tile(tl.program_id(0), tl.cdiv(num_rows, BLOCK_M), tl.cdiv(n_size, BLOCK_N), GROUP_M)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_mask = rows < num_rows
    rows64 = rows.to(tl.int64)
    samples = tl.load(sample_of_row_ptr + rows, mask=row_mask, other=0).to(tl.int64)  # S·d may pass 2^31
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    col_mask = cols < n_size
    tile_mask = row_mask[:, None] & col_mask[None, :]
    x_rows = x_ptr + rows64[:, None] * stride_x
    in_scale_rows = in_scale_ptr + samples[:, None] * stride_in
    out_scale_ptrs = out_scale_ptr + samples[:, None] * stride_out + cols[None, :]
    partner_ptrs = partner_ptr + rows64[:, None] * stride_p + cols[None, :]
    if BETA_GRAD:
        partner = tl.load(partner_ptrs, mask=tile_mask, other=0.0).to(ACC_DTYPE)
        scaled_partner = partner * tl.load(out_scale_ptrs, mask=tile_mask, other=0.0).to(ACC_DTYPE)
    total = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
    for k in range(NUM_BASES):  # not unrolled: one basis' reduction loop at a time keeps registers low
        beta_k = tl.load(beta_ptr + samples * stride_beta + k, mask=row_mask, other=0.0).to(ACC_DTYPE)
        basis_ptr = bases_ptr + k * stride_bk
        if BETA_GRAD:
            per_basis = scaled_rows_dot(
                tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE), x_rows, in_scale_rows, basis_ptr,
                tl.full((BLOCK_M,), 1.0, ACC_DTYPE), row_mask, cols, col_mask, r_size, stride_bn, stride_br,
                ACC_DTYPE, INPUT_PRECISION, BLOCK_R,
            )
            beta_part = tl.sum(per_basis * scaled_partner, axis=1)
            tl.atomic_add(beta_grad_ptr + samples * stride_bg + k, beta_part, mask=row_mask)
            total += beta_k[:, None] * per_basis
        else:
            total = scaled_rows_dot(
                total, x_rows, in_scale_rows, basis_ptr, beta_k, row_mask, cols, col_mask, r_size,
                stride_bn, stride_br, ACC_DTYPE, INPUT_PRECISION, BLOCK_R,
            )
    if SCALE_GRAD:
        partner = tl.load(partner_ptrs, mask=tile_mask, other=0.0).to(ACC_DTYPE)
        scale_grad_ptrs = scale_grad_ptr + samples[:, None] * stride_sg + cols[None, :]
        tl.atomic_add(scale_grad_ptrs, partner * total, mask=tile_mask)
    if STORE_OUT:
        out = total * tl.load(out_scale_ptrs, mask=tile_mask, other=0.0).to(ACC_DTYPE)
        if HAS_BIAS:
            out += tl.load(bias_ptr + cols, mask=col_mask, other=0.0).to(ACC_DTYPE)[None, :]
        out_ptrs = out_ptr + rows64[:, None] * stride_y + cols[None, :]
        tl.store(out_ptrs, out.to(out_ptr.dtype.element_ty), mask=tile_mask)
