"""``FDLinear``: a drop-in ``nn.Linear`` whose weight is rebuilt for every sample (docs/design.md §1)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from fdlinear import arguments
from fdlinear.backends import BACKENDS
from fdlinear.functional import check_input, fdlinear_packed, pack
from fdlinear.modulation import SpectralModulation, compute_dtype
from fdlinear.spectral import (
    PARTITIONS,
    BasisCache,
    basis_slots,
    frequency_groups,
    spectrum_to_weight,
    weight_to_spectrum,
)


class FDLinear(nn.Module):
    """Frequency-disjoint dynamic linear layer.

    ``W_s = diag(a_out) (Σ_k β_sk B_k) diag(a_in)`` for each sample s, where the K bases are
    frequency-disjoint parts of one spectral parameter and (a_in, a_out, β) are predicted from
    the sample's mean token. At initialisation every modulation is 1 and the layer computes
    ``x @ weight.T + bias`` exactly like the ``nn.Linear`` it replaces.

    Args:
        in_features, out_features: d_in, d_out (>= 1).
        bias: learn an additive bias.
        num_bases: K frequency groups, 1 <= K <= d_out·(d_in//2+1) (the spectral coefficients; each group holds
            at least one).
        reduction, min_channels: bottleneck width ``max(int(d_in * reduction), min_channels)``.
        partition: ``"default"`` (deterministic, any K) or ``"fdconv"`` (the public reference's).
        backend: ``None`` (automatic), ``"reference"``, ``"triton"`` or ``"native"``.

    Shapes (``forward(x, cu_seqlens=None)``):
        packed (T, d_in) with cu_seqlens (S+1,); batched (..., N, d_in) — every leading index a
        sample; (T, d_in) — every row a sample; (d_in,) — one row. Output: x's shape with d_out last.

    The state dict has the keys of the public reference FDLinear (``dft_weight``, ``bias``,
    ``KSM_Global.*``), so its checkpoints load with ``partition="fdconv"``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        num_bases: int = 4,
        reduction: float = 0.0625,
        min_channels: int = 16,
        partition: str = "default",
        device=None,
        dtype=None,
        backend: str | None = None,
    ) -> None:
        super().__init__()
        in_features = arguments.integer("in_features", in_features, minimum=1)
        out_features = arguments.integer("out_features", out_features, minimum=1)
        bias = arguments.flag("bias", bias)
        num_bases = arguments.integer("num_bases", num_bases, minimum=1)
        if partition not in PARTITIONS:
            raise ValueError(f"partition must be one of {PARTITIONS}, got {partition!r}")
        # Derived, deterministic data (checks num_bases against the coefficients): kept as a plain CPU tensor (not
        # a buffer, so meta-device construction and checkpoint loading never touch it), moved on first use.
        groups = frequency_groups(out_features, in_features, num_bases, partition)
        if backend is not None and backend not in BACKENDS:
            raise ValueError(f"backend must be None or one of {BACKENDS}, got {backend!r}")
        arguments.floating_dtype("dtype", dtype)
        factory = {"device": device, "dtype": dtype}
        self.in_features = in_features
        self.out_features = out_features
        self.num_bases = num_bases
        self.partition = partition
        self.backend = backend
        self.dft_weight = nn.Parameter(torch.empty(1, out_features, in_features // 2 + 1, 2, **factory))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_features, **factory))
        else:
            self.register_parameter("bias", None)
        self.KSM_Global = SpectralModulation(
            in_features, out_features, num_bases, reduction, min_channels, **factory
        )
        self._groups = groups
        self._basis_cache = BasisCache()
        self.reset_parameters()

    # -- parameters -------------------------------------------------------------------------
    def reset_parameters(self) -> None:
        """Initialise the static weight and bias as ``nn.Linear`` does; modulation heads to zero."""
        weight = torch.empty(self.out_features, self.in_features, device=self.dft_weight.device)
        nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
        self._set_weight(weight)
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features)
            nn.init.uniform_(self.bias, -bound, bound)
        self.KSM_Global.reset_parameters()

    def _set_weight(self, weight: Tensor) -> None:
        with torch.no_grad():
            self.dft_weight.copy_(weight_to_spectrum(weight.to(torch.float64)))

    @property
    def frequency_groups(self) -> Tensor:
        """(d_out, d_in//2+1) int64 frequency group of every spectral coefficient, on the parameter's device."""
        device = self.dft_weight.device
        if device.type != "meta" and self._groups.device != device:
            self._groups = self._groups.to(device)
        return self._groups

    def _basis_slots(self) -> Tensor:
        """:func:`~fdlinear.spectral.basis_slots` of the groups, made once per device."""
        groups = self.frequency_groups
        slots = getattr(self, "_slots", None)
        if slots is None or slots.device != groups.device:
            slots = self._slots = basis_slots(groups)
        return slots

    @property
    def weight(self) -> Tensor:
        """The static equivalent weight Σ_k B_k, shape (out_features, in_features), differentiable."""
        return spectrum_to_weight(self.dft_weight, self.in_features)

    def bases(self, dtype: torch.dtype | None = None) -> Tensor:
        """The K spectral bases (K, d_out, d_in) in ``dtype`` (default: the parameter's); differentiable in
        ``dft_weight`` when grad is enabled, else cached until ``dft_weight`` changes (see ``BasisCache``)."""
        dtype = dtype or self.dft_weight.dtype
        return self._basis_cache.get(
            self.dft_weight, self.frequency_groups, self.num_bases, self.in_features, dtype, self._basis_slots()
        )

    # -- conversion -------------------------------------------------------------------------
    @classmethod
    def from_linear(cls, linear: nn.Linear, num_bases: int = 4, **kwargs) -> FDLinear:
        """An FDLinear computing exactly ``linear``'s function at initialisation (same device and dtype)."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be an nn.Linear, got {type(linear).__name__}")
        weight = linear.weight
        layer = cls(
            linear.in_features,
            linear.out_features,
            bias=linear.bias is not None,
            num_bases=num_bases,
            device=weight.device,
            dtype=weight.dtype,
            **kwargs,
        )
        layer._set_weight(weight)
        if linear.bias is not None:
            with torch.no_grad():
                layer.bias.copy_(linear.bias)
        return layer

    @torch.no_grad()
    def to_linear(self, context: Tensor | None = None) -> nn.Linear:
        """The static ``nn.Linear`` equivalent: Σ_k B_k without context, else the weight W_s of the
        sample whose tokens (N, d_in) or mean token (d_in,) is ``context``."""
        param = self.dft_weight
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                           device=param.device, dtype=param.dtype)
        if context is None:
            weight = self.weight
        else:
            check_input(context, self.in_features)
            mean = context.reshape(-1, self.in_features).to(compute_dtype(param.dtype)).mean(0, keepdim=True)
            a_in, a_out, beta = self.KSM_Global(mean)
            mixed = torch.einsum("k,koi->oi", beta[0], self.bases(mean.dtype))
            weight = a_out[0, :, None] * mixed * a_in[0, None, :]
        linear.weight.copy_(weight)
        if self.bias is not None:
            linear.bias.copy_(self.bias)
        return linear

    # -- forward ----------------------------------------------------------------------------
    def forward(self, x: Tensor, cu_seqlens: Tensor | None = None) -> Tensor:
        """x in one of the four forms (see the class docstring) → same leading shape, last dim d_out."""
        check_input(x, self.in_features)
        packed = pack(x, cu_seqlens)
        a_in, a_out, beta = self.KSM_Global(packed.sample_means(compute_dtype(x.dtype)))
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return fdlinear_packed(packed, self.bases(x.dtype), a_in, a_out, beta, bias, backend=self.backend)

    def clear_basis_cache(self) -> None:
        """Drop the cached bases (needed only after editing ``dft_weight`` in place through ``.data``)."""
        self._basis_cache.clear()

    # -- nn.Module plumbing -----------------------------------------------------------------
    def _apply(self, fn, recurse: bool = True):
        self.clear_basis_cache()
        return super()._apply(fn, recurse)

    def __getstate__(self) -> dict:
        state = super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__.copy()
        state = dict(state)
        state["_basis_cache"] = BasisCache()
        return state

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, num_bases={self.num_bases}, partition={self.partition!r}"
        )
