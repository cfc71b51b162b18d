"""Frequency-disjoint spectral parameterisation of a weight matrix (docs/design.md §1).

A weight ``W`` of shape ``(d_out, d_in)`` is stored as its half spectrum
``dft_weight = view_as_real(rfft2(W)) / s`` of shape ``(1, d_out, d_in // 2 + 1, 2)``.
The coefficients of the ``d_out x (d_in // 2 + 1)`` grid are split into ``K`` disjoint
groups by frequency radius (group 0 = lowest frequencies) and basis ``k`` is the inverse
transform of group ``k`` alone, so that ``sum_k B_k == W`` by linearity.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

PARTITIONS = ("default", "fdconv")


def spectrum_scale(in_features: int, out_features: int) -> int:
    """The factor ``s`` the stored spectrum is divided by: ``min(d_in, d_out) // 2`` (at least 1)."""
    return max(min(in_features, out_features) // 2, 1)


def _frequency_radius(out_features: int, in_features: int, dtype: torch.dtype) -> Tensor:
    """Radius ``sqrt(fftfreq(d_out)[r]^2 + rfftfreq(d_in)[c]^2)`` on the rfft grid, shape (d_out, d_in//2+1)."""
    rows = torch.fft.fftfreq(out_features, dtype=dtype)
    cols = torch.fft.rfftfreq(in_features, dtype=dtype)
    grid = torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1)
    return torch.linalg.vector_norm(grid, dim=-1)


def frequency_groups(out_features: int, in_features: int, num_bases: int, partition: str = "default") -> Tensor:
    """See :func:`_frequency_groups`; always computed on the CPU, whatever device context is active."""
    with torch.device("cpu"):
        return _frequency_groups(out_features, in_features, num_bases, partition)


def _frequency_groups(out_features: int, in_features: int, num_bases: int, partition: str) -> Tensor:
    """Assign every rfft coefficient to one of ``num_bases`` frequency groups.

    Args:
        out_features, in_features: matrix size ``d_out, d_in``.
        num_bases: K >= 1.
        partition: ``"default"`` sorts by (radius, flat index) in float64 and cuts K equal-count
            chunks, the last one taking the remainder; ``"fdconv"`` reproduces the public FDConv
            reference (``torch.sort`` of the float32 radius on the CPU; K must divide the count).

    Returns:
        int64 tensor of shape ``(d_out, d_in // 2 + 1)`` with values in ``[0, K)`` (CPU).
    """
    if partition not in PARTITIONS:
        raise ValueError(f"partition must be one of {PARTITIONS}, got {partition!r}")
    cols = in_features // 2 + 1
    count = out_features * cols
    if num_bases < 1 or num_bases > count:
        raise ValueError(
            f"num_bases must be between 1 and the {out_features}x{cols} = {count} spectral coefficients "
            f"(every basis needs at least one), got {num_bases}"
        )
    if partition == "fdconv":
        if count % num_bases:
            raise ValueError(
                f'partition="fdconv" needs num_bases to divide the {out_features}x{cols} = {count} '
                f"spectral coefficients, got num_bases={num_bases}"
            )
        order = torch.sort(_frequency_radius(out_features, in_features, torch.float32).reshape(-1)).indices
    else:
        radius = _frequency_radius(out_features, in_features, torch.float64).reshape(-1)
        order = torch.sort(radius, stable=True).indices
    chunk = count // num_bases  # >= 1: every group is non-empty, the last one takes the remainder
    group_of_rank = torch.clamp(torch.arange(count) // chunk, max=num_bases - 1)
    groups = torch.empty(count, dtype=torch.long)
    groups[order] = group_of_rank
    return groups.reshape(out_features, cols)


def groups_from_indices(indices: Tensor, out_features: int, in_features: int) -> Tensor:
    """Convert the public reference's ``indices`` buffer ``(1, 2, K, n)`` into a group map (d_out, d_in//2+1)."""
    if indices.dim() != 4 or indices.shape[:2] != (1, 2):
        raise ValueError(f"indices must have shape (1, 2, K, n), got {tuple(indices.shape)}")
    num_bases = indices.shape[2]
    groups = torch.full((out_features, in_features // 2 + 1), -1, dtype=torch.long)
    for k in range(num_bases):
        groups[indices[0, 0, k], indices[0, 1, k]] = k
    if (groups < 0).any():
        raise ValueError("indices do not cover every spectral coefficient")
    return groups


def weight_to_spectrum(weight: Tensor) -> Tensor:
    """``(d_out, d_in)`` weight → spectral parameter ``(1, d_out, d_in//2+1, 2)`` (computed in float64)."""
    out_features, in_features = weight.shape
    spectrum = torch.fft.rfft2(weight.detach().to(torch.float64)) / spectrum_scale(in_features, out_features)
    return torch.view_as_real(spectrum).unsqueeze(0).to(weight.dtype)


def _real_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def spectrum_to_weight(dft_weight: Tensor, in_features: int) -> Tensor:
    """Spectral parameter ``(1, d_out, d_in//2+1, 2)`` → the static weight ``(d_out, d_in)`` = Σ_k B_k.

    Computed in at least float32, differentiable, returned in ``dft_weight``'s dtype.
    """
    out_features = dft_weight.shape[1]
    real = dft_weight[0].to(_real_dtype(dft_weight.dtype)).contiguous()
    spectrum = torch.view_as_complex(real) * spectrum_scale(in_features, out_features)
    return torch.fft.irfft2(spectrum, s=(out_features, in_features)).to(dft_weight.dtype)


def basis_slots(groups: Tensor) -> Tensor:
    """(2, d_out·(d_in//2+1)) int64: where each coefficient (row-major over ``groups``' (d_out, d_in//2+1) grid)
    goes in the flattened stack of K masked spectra: row 0 in the (K, d_in//2+1, d_out) stack the forward transforms
    (transposed, so that its transform along d_out runs over contiguous memory), row 1 in the (K, d_out, d_in//2+1)
    stack the backward's 2-D real FFT produces."""
    out_features, cols = groups.shape
    rows = torch.arange(out_features, device=groups.device).unsqueeze(1)
    columns = torch.arange(cols, device=groups.device).unsqueeze(0)
    transposed = (groups * cols + columns) * out_features + rows
    natural = (groups * out_features + rows) * cols + columns
    return torch.stack([transposed.reshape(-1), natural.reshape(-1)])


def _column_weights(in_features: int, cols: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """How often each column of the half spectrum counts in the real inverse transform along d_in: 2 for the
    columns whose conjugate twin is implied, 1 for the DC column (and the Nyquist column of an even d_in)."""
    weights = torch.full((cols,), 2.0, dtype=dtype, device=device)
    weights[0] = 1.0
    if in_features % 2 == 0:
        weights[-1] = 1.0
    return weights


class _SpectralBases(torch.autograd.Function):
    """Spectrum → K bases in one step each way, nothing complex kept for backward.

    forward: scatter the scaled coefficients into their group's slot of a zeroed (K, cols, d_out) stack, inverse
    FFT along d_out (contiguous), inverse real FFT along d_in → (K, d_out, d_in).
    backward: the adjoint — one 2-D real FFT of the K gradients (a 2-D real-to-complex FFT runs about twice as fast
    as the complex-to-real one on the CPU), gather each coefficient from its group's slot, times the column weights
    and the scale.
    """

    @staticmethod
    def forward(real: Tensor, slots: Tensor, num_bases: int, in_features: int, scale: float) -> Tensor:
        out_features, cols = real.shape[:2]
        masked = torch.zeros(num_bases * cols * out_features, dtype=_complex_dtype(real.dtype), device=real.device)
        masked[slots[0]] = torch.view_as_complex(real).reshape(-1) * scale
        columns = torch.fft.ifft(masked.view(num_bases, cols, out_features), dim=-1)
        return torch.fft.irfft(columns.transpose(1, 2), n=in_features, dim=-1)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        real, slots, _, in_features, scale = inputs
        ctx.save_for_backward(slots)
        ctx.shape = (real.shape[0], real.shape[1], in_features)
        ctx.scale = scale

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_bases: Tensor):
        (slots,) = ctx.saved_tensors
        out_features, cols, in_features = ctx.shape
        spectra = torch.fft.rfft2(grad_bases.to(_real_dtype(grad_bases.dtype)))  # (K, d_out, cols)
        picked = spectra.reshape(-1)[slots[1]].view(out_features, cols)
        factor = _column_weights(in_features, cols, grad_bases.dtype, grad_bases.device)
        factor = factor * (ctx.scale / (out_features * in_features))
        return torch.view_as_real(picked * factor), None, None, None, None


def _complex_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.complex128 if dtype == torch.float64 else torch.complex64


def spectral_bases(dft_weight: Tensor, groups: Tensor, num_bases: int, in_features: int,
                   slots: Tensor | None = None) -> Tensor:
    """The K frequency-disjoint bases ``B_k = irfft2(s · M_k ⊙ Φ)``.

    Args:
        dft_weight: ``(1, d_out, d_in//2+1, 2)`` spectral parameter.
        groups: ``(d_out, d_in//2+1)`` int64 group of each coefficient.
        num_bases: K.
        in_features: d_in (the rfft grid does not determine it when d_in is odd).
        slots: ``basis_slots(groups)`` on dft_weight's device, when the caller keeps it (else computed).

    Returns:
        ``(K, d_out, d_in)`` in at least float32 (float64 for a float64 parameter), differentiable in
        ``dft_weight`` (first order; the backward is the adjoint transform, see :class:`_SpectralBases`).
    """
    out_features = dft_weight.shape[1]
    real = dft_weight[0].to(_real_dtype(dft_weight.dtype)).contiguous()
    if slots is None:
        slots = basis_slots(groups.to(dft_weight.device))
    return _SpectralBases.apply(real, slots, num_bases, in_features, spectrum_scale(in_features, out_features))


class BasisCache:
    """Caches the bases of one spectral parameter for inference, keyed on its storage, version and dtype.

    When a gradient for ``dft_weight`` is needed the bases are built afresh through autograd (one
    batched irfft2, and its adjoint in backward). Otherwise the cached tensor is reused until
    ``dft_weight`` changes: an optimizer step, ``copy_`` or ``load_state_dict`` bumps its version and
    ``.to()`` gives it new storage. In-place edits through ``.data`` bypass version tracking; call
    :meth:`clear` after those.
    """

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.value: Tensor | None = None

    def clear(self) -> None:
        """Forget the cached bases."""
        self.key = None
        self.value = None

    def get(self, dft_weight: Tensor, groups: Tensor, num_bases: int, in_features: int, dtype: torch.dtype,
            slots: Tensor | None = None) -> Tensor:
        """Bases ``(K, d_out, d_in)`` in ``dtype``; differentiable in ``dft_weight`` when grad is enabled."""
        if (torch.is_grad_enabled() and dft_weight.requires_grad) or torch.compiler.is_compiling():
            return spectral_bases(dft_weight, groups, num_bases, in_features, slots).to(dtype)
        key = (dft_weight.data_ptr(), dft_weight._version, dft_weight.device, dtype, tuple(dft_weight.shape))
        if key != self.key:
            self.value = spectral_bases(dft_weight, groups, num_bases, in_features, slots).to(dtype)
            self.key = key
        return self.value
