"""The per-sample-loop baseline: the public reference FDLinear's algorithm, re-implemented for benchmarking.

A Python loop over samples; per sample: mean token → modulations, the β-modulated spectrum scattered into a
zero spectrum, one irfft2, W = diag(a_out) M diag(a_in), F.linear; when training with grad, each sample's weight
generation and matmul run under non-reentrant activation checkpointing (so W is recomputed in backward).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from fdlinear import FDLinear
from fdlinear.modulation import compute_dtype
from fdlinear.spectral import spectrum_scale


def _sample_output(layer: FDLinear, rows: Tensor) -> Tensor:
    a_in, a_out, beta = layer.KSM_Global(rows.mean(0, keepdim=True))
    param = layer.dft_weight[0].to(compute_dtype(rows.dtype))
    spectrum = torch.view_as_complex(param.contiguous()) * spectrum_scale(layer.in_features, layer.out_features)
    modulated = torch.zeros_like(spectrum)
    groups = layer.frequency_groups
    for k in range(layer.num_bases):  # scatter each group's coefficients, scaled by β_k
        mask = groups == k
        modulated[mask] = spectrum[mask] * beta[0, k]
    mixed = torch.fft.irfft2(modulated, s=(layer.out_features, layer.in_features))
    weight = (a_out[0, :, None] * mixed * a_in[0, None, :]).to(rows.dtype)
    return F.linear(rows, weight)


def per_sample_loop(layer: FDLinear, x: Tensor, cu_seqlens: Tensor) -> Tensor:
    """Packed x (T, d_in) with boundaries (S+1,) → (T, d_out), one sample at a time."""
    outputs = []
    for start, end in zip(cu_seqlens[:-1].tolist(), cu_seqlens[1:].tolist()):
        if start == end:
            continue
        rows = x[start:end]
        if torch.is_grad_enabled() and layer.training and rows.requires_grad:
            outputs.append(checkpoint(_sample_output, layer, rows, use_reentrant=False))
        else:
            outputs.append(_sample_output(layer, rows))
    y = torch.cat(outputs) if outputs else x.new_zeros(0, layer.out_features)
    return y if layer.bias is None else y + layer.bias.to(y.dtype)
