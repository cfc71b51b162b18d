"""Kernel spectral modulation: the bottleneck that predicts a_in, a_out and β from a sample's context (docs/design.md §1).

Submodule names follow the public reference (``fc``, ``norm``, ``channel_fc``, ``filter_fc``,
``kernel_fc``) so that its checkpoints load unchanged: ``channel_fc`` predicts a_in,
``filter_fc`` a_out and ``kernel_fc`` β.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fdlinear import arguments


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype modulation and spectral transforms run in: float64 for float64, else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


class RMSNorm(nn.Module):
    """RMS normalisation with a learnable gain, computed in at least float32."""

    def __init__(self, features: int, eps: float = 1e-6, device=None, dtype=None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(features, device=device, dtype=dtype))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        """x (..., features) → same shape, in ``compute_dtype(x.dtype)``."""
        x = x.to(compute_dtype(x.dtype))
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight.to(x.dtype) * x

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


class SpectralModulation(nn.Module):
    """``h = ReLU(RMSNorm(A x̄))``; ``a_in = 2σ(C h + c)``, ``a_out = 2σ(F h + f)``, ``β = 2σ(G h + g)``.

    The three heads start at zero, so every modulation is exactly 1 at initialisation.
    With ``num_bases == 1`` there is no β head (β ≡ 1), as in the public reference.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        num_bases: int,
        reduction: float = 0.0625,
        min_channels: int = 16,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        in_features = arguments.integer("in_features", in_features, minimum=1)
        out_features = arguments.integer("out_features", out_features, minimum=1)
        self.num_bases = arguments.integer("num_bases", num_bases, minimum=1)
        reduction = arguments.finite_number("reduction", reduction, minimum=0.0)
        min_channels = arguments.integer("min_channels", min_channels, minimum=1)
        self.hidden_features = max(int(in_features * reduction), min_channels)
        self.fc = nn.Linear(in_features, self.hidden_features, bias=False, **factory)
        self.norm = RMSNorm(self.hidden_features, **factory)
        self.channel_fc = nn.Linear(self.hidden_features, in_features, **factory)
        self.filter_fc = nn.Linear(self.hidden_features, out_features, **factory)
        if num_bases > 1:
            self.kernel_fc = nn.Linear(self.hidden_features, num_bases, **factory)
        self.reset_parameters()

    def heads(self) -> list[nn.Linear]:
        """The zero-initialised output heads (a_in, a_out and, for K > 1, β)."""
        return [self.channel_fc, self.filter_fc] + ([self.kernel_fc] if self.num_bases > 1 else [])

    def reset_parameters(self) -> None:
        """He-normal (fan-out) bottleneck, unit norm gain, zero heads — every modulation starts at 1."""
        nn.init.kaiming_normal_(self.fc.weight, mode="fan_out", nonlinearity="relu")
        nn.init.ones_(self.norm.weight)
        for head in self.heads():
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def forward(self, context: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """context (S, d_in) → a_in (S, d_in), a_out (S, d_out), β (S, K), all in ``compute_dtype``."""
        dtype = compute_dtype(context.dtype)
        context = context.to(dtype)

        def linear(layer: nn.Linear, h: Tensor) -> Tensor:
            bias = None if layer.bias is None else layer.bias.to(dtype)
            return F.linear(h, layer.weight.to(dtype), bias)

        hidden = torch.relu(self.norm(linear(self.fc, context)))
        a_in = 2.0 * torch.sigmoid(linear(self.channel_fc, hidden))
        a_out = 2.0 * torch.sigmoid(linear(self.filter_fc, hidden))
        if self.num_bases > 1:
            beta = 2.0 * torch.sigmoid(linear(self.kernel_fc, hidden))
        else:
            beta = torch.ones(context.shape[0], 1, dtype=dtype, device=context.device)
        return a_in, a_out, beta
