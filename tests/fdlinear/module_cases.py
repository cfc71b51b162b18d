"""Helpers for module-level tests: an FDLinear whose modulation is active, and the input forms."""

from __future__ import annotations

import torch

from fdlinear import FDLinear


def active_layer(d_in: int, d_out: int, num_bases: int = 3, bias: bool = True, dtype=torch.float64, seed: int = 0,
                 **kwargs) -> FDLinear:
    """An FDLinear with non-zero modulation heads, so every modulation differs between samples."""
    torch.manual_seed(seed)
    layer = FDLinear(d_in, d_out, bias=bias, num_bases=num_bases, dtype=dtype, **kwargs)
    with torch.no_grad():
        for head in layer.KSM_Global.heads():
            head.weight.normal_(0, 0.5)
            head.bias.normal_(0, 0.5)
        layer.KSM_Global.norm.weight.uniform_(0.5, 1.5)
    return layer


def packed_input(seqlens: list[int], d_in: int, dtype=torch.float64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(x (T, d_in), cu_seqlens (S+1,)) for samples of the given lengths."""
    gen = torch.Generator().manual_seed(seed)
    cu = torch.zeros(len(seqlens) + 1, dtype=torch.int64)
    cu[1:] = torch.cumsum(torch.tensor(seqlens, dtype=torch.int64), 0)
    return torch.randn(int(cu[-1]), d_in, generator=gen, dtype=dtype), cu
