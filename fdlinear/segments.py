"""Vectorised helpers over packed samples described by ``cu_seqlens`` (no Python loop over samples)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def sample_of_rows(cu_seqlens: Tensor, num_rows: int) -> Tensor:
    """(T,) int64 sample index of every row, for (S+1,) boundaries over ``num_rows`` packed rows. No host
    synchronisation: the output size is given, so it runs asynchronously on a GPU."""
    cu = cu_seqlens.to(torch.int64)
    samples = torch.arange(cu.shape[0] - 1, device=cu.device)
    return torch.repeat_interleave(samples, cu[1:] - cu[:-1], output_size=num_rows)


def segment_mean(rows: Tensor, cu_seqlens: Tensor) -> Tensor:
    """(T, d) packed rows → (S, d) mean of each sample's rows (zeros for an empty sample), without host
    synchronisation (unlike :class:`Segments`, which reads the longest length back)."""
    cu = cu_seqlens.to(torch.int64)
    total = rows.new_zeros(cu.shape[0] - 1, rows.shape[-1]).index_add_(0, sample_of_rows(cu, rows.shape[0]), rows)
    return total / (cu[1:] - cu[:-1]).clamp(min=1).unsqueeze(-1).to(total.dtype)


@dataclass(frozen=True)
class Segments:
    """Row layout of S packed samples.

    Attributes:
        cu_seqlens: (S+1,) int64 boundaries.
        lengths: (S,) int64 rows per sample.
        sample_of_row: (T,) int64 sample index of every row.
        position_of_row: (T,) int64 position of every row inside its sample.
        max_length: the longest sample (0 when there are none).
    """

    cu_seqlens: Tensor
    lengths: Tensor
    sample_of_row: Tensor
    position_of_row: Tensor
    max_length: int

    @property
    def num_samples(self) -> int:
        return self.lengths.shape[0]

    @property
    def num_rows(self) -> int:
        return self.sample_of_row.shape[0]

    @classmethod
    def from_cu_seqlens(cls, cu_seqlens: Tensor, num_rows: int) -> Segments:
        """Build the layout from (S+1,) boundaries over ``num_rows`` packed rows."""
        cu = cu_seqlens.to(torch.int64)
        lengths = cu[1:] - cu[:-1]
        sample_of_row = sample_of_rows(cu, num_rows)
        position_of_row = torch.arange(num_rows, device=cu.device) - cu[sample_of_row]
        max_length = int(lengths.max()) if lengths.numel() else 0
        return cls(cu, lengths, sample_of_row, position_of_row, max_length)

    @property
    def uniform(self) -> bool:
        """True when every sample has ``max_length`` rows (then padding is a free reshape)."""
        return self.num_rows == self.num_samples * self.max_length

    def pad(self, rows: Tensor) -> Tensor:
        """(T, d) packed rows → (S, max_length, d), zero-filled past each sample's end."""
        if self.uniform:
            return rows.reshape(self.num_samples, self.max_length, rows.shape[-1])
        padded = rows.new_zeros(self.num_samples, self.max_length, rows.shape[-1])
        padded[self.sample_of_row, self.position_of_row] = rows
        return padded

    def unpad(self, padded: Tensor) -> Tensor:
        """(S, max_length, d) → (T, d) packed rows."""
        if self.uniform:
            return padded.reshape(self.num_rows, padded.shape[-1])
        return padded[self.sample_of_row, self.position_of_row]

    def per_row(self, per_sample: Tensor) -> Tensor:
        """(S, d) per-sample values → (T, d), each row given its sample's value."""
        return per_sample[self.sample_of_row]

    def sum(self, rows: Tensor, dtype: torch.dtype | None = None) -> Tensor:
        """(T, d) → (S, d) sum of each sample's rows (accumulated in ``dtype``, default rows.dtype)."""
        rows = rows if dtype is None else rows.to(dtype)
        out = rows.new_zeros(self.num_samples, rows.shape[-1])
        return out.index_add_(0, self.sample_of_row, rows)

    def mean(self, rows: Tensor, dtype: torch.dtype | None = None) -> Tensor:
        """(T, d) → (S, d) mean of each sample's rows; zeros for an empty sample."""
        total = self.sum(rows, dtype)
        return total / self.lengths.clamp(min=1).unsqueeze(-1).to(total.dtype)
