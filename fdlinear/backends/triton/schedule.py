"""Row-tile schedules for the Triton kernels, built on the device from ``cu_seqlens`` (vectorised, no host sync).

The mix-form kernels give every program one tile of ``block_m`` rows that lies inside a single sample,
so that the sample's weight tile can be mixed once per program. The number of such tiles depends on
the sample lengths, which live on the device; instead of reading them back, the grid is sized by a
host-known upper bound and the surplus programs find sample ``-1`` and exit at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class TileSchedule:
    """Which rows each mix-form program covers.

    Attributes:
        tile_sample: (num_tiles,) int32 sample of each tile; -1 for the surplus tiles past the last one.
        tile_start: (num_tiles,) int32 first row of each tile (rows run to ``min(start + block_m, sample end)``).
        block_m: rows per tile.
    """

    tile_sample: Tensor
    tile_start: Tensor
    block_m: int

    @property
    def num_tiles(self) -> int:
        return self.tile_sample.shape[0]


def tile_bound(num_rows: int, num_samples: int, block_m: int) -> int:
    """Upper bound on Σ_s ceil(L_s / block_m) given only T and S: Σ ceil(L_s/b) <= floor(T/b) + S."""
    return num_rows // block_m + num_samples if num_rows else 0


def row_tiles(cu_seqlens: Tensor, num_rows: int, block_m: int) -> TileSchedule:
    """Tiles of at most ``block_m`` rows that never cross a sample boundary; empty samples get none.

    Args:
        cu_seqlens: (S+1,) int32/int64 sample boundaries over ``num_rows`` packed rows.
        num_rows: T.
        block_m: rows per tile.

    Returns:
        A :class:`TileSchedule` of ``tile_bound(T, S, block_m)`` entries, the valid tiles first.
    """
    cu = cu_seqlens.to(torch.int64)
    num_samples = cu.shape[0] - 1
    bound = tile_bound(num_rows, num_samples, block_m)
    tiles_per_sample = (cu[1:] - cu[:-1] + block_m - 1) // block_m
    first_tile = torch.zeros(num_samples + 1, dtype=torch.int64, device=cu.device)
    first_tile[1:] = torch.cumsum(tiles_per_sample, 0)
    tile = torch.arange(bound, dtype=torch.int64, device=cu.device)
    # The last sample whose first tile is <= tile: empty samples (equal first tiles) are skipped.
    sample = (torch.searchsorted(first_tile, tile, right=True) - 1).clamp(max=max(num_samples - 1, 0))
    start = cu[sample] + (tile - first_tile[sample]) * block_m
    valid = tile < first_tile[-1]
    tile_sample = torch.where(valid, sample, -1).to(torch.int32)
    return TileSchedule(tile_sample, torch.where(valid, start, 0).to(torch.int32), block_m)


def choose_form(num_rows: int, num_samples: int, num_bases: int) -> str:
    """``"expand"`` when the mean sample is shorter than K rows (K GEMMs over the rows cost less than
    mixing a weight per sample), else ``"mix"``. Uses host-known sizes only."""
    return "expand" if num_rows < num_bases * num_samples else "mix"
