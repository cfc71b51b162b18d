"""Vectorised helpers over packed samples described by ``cu_seqlens`` (no Python loop over samples), and the
cache of what is derived from a ``cu_seqlens`` tensor."""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import Tensor

Derived = TypeVar("Derived")


class BoundaryCache:
    """Values derived from a ``cu_seqlens`` tensor (its check, tile schedules, row → sample maps), remembered
    while that very tensor lives unchanged.

    The layers of a model share one boundaries tensor (the DVE passes the same one to every layer), so each
    derived value is computed once per forward instead of once per layer and pass; on a GPU each computation
    is a string of small launches or a read-back to the host. An entry is used only for the same tensor object
    (a weak reference) at the same version, so an in-place change recomputes it. Nothing is remembered for
    inference tensors (they have no version counter), while compiling, or during CUDA graph capture (the
    values would live in the graph's memory pool).
    """

    def __init__(self, capacity: int = 32) -> None:
        self._entries: OrderedDict[tuple, tuple[weakref.ref, int, object]] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()
        self._dead: deque[weakref.ref] = deque()  # references whose tensor died: their entries go at the next get

    def get(self, cu_seqlens: Tensor, key: tuple, compute: Callable[[], Derived]) -> Derived:
        """``compute()``, or its remembered result for this tensor, version and ``key`` (what else it depends on)."""
        if not self._cacheable(cu_seqlens):
            return compute()
        full_key = (id(cu_seqlens), *key)
        with self._lock:
            self._drop_dead()
            entry = self._entries.get(full_key)
            if entry is not None and entry[0]() is cu_seqlens and entry[1] == cu_seqlens._version:
                self._entries.move_to_end(full_key)
                return entry[2]
        value = compute()
        with self._lock:
            self._entries[full_key] = (weakref.ref(cu_seqlens, self._dead.append), cu_seqlens._version, value)
            self._entries.move_to_end(full_key)
            while len(self._entries) > self._capacity:
                self._entries.popitem(last=False)
        return value

    def clear(self) -> None:
        """Forget every entry."""
        with self._lock:
            self._entries.clear()
            self._dead.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def _drop_dead(self) -> None:
        """Drop the entries of tensors that died (their derived values may be large device tensors)."""
        if not self._dead:
            return
        dead = set()
        while self._dead:
            dead.add(id(self._dead.popleft()))  # by identity: a dead reference cannot be hashed
        for full_key in [k for k, entry in self._entries.items() if id(entry[0]) in dead]:
            del self._entries[full_key]

    @staticmethod
    def _cacheable(cu_seqlens: Tensor) -> bool:
        if torch.compiler.is_compiling() or torch.is_inference(cu_seqlens):
            return False
        return not (cu_seqlens.is_cuda and torch.cuda.is_current_stream_capturing())


BOUNDARY_CACHE = BoundaryCache()


def sample_of_rows(cu_seqlens: Tensor, num_rows: int) -> Tensor:
    """(T,) int64 sample index of every row, for (S+1,) boundaries over ``num_rows`` packed rows. No host
    synchronisation (the output size is given); remembered per boundaries tensor (:class:`BoundaryCache`)."""
    def compute() -> Tensor:
        cu = cu_seqlens.to(torch.int64)
        samples = torch.arange(cu.shape[0] - 1, device=cu.device)
        return torch.repeat_interleave(samples, cu[1:] - cu[:-1], output_size=num_rows)

    return BOUNDARY_CACHE.get(cu_seqlens, ("sample_of_rows", num_rows), compute)


def segment_mean(rows: Tensor, cu_seqlens: Tensor) -> Tensor:
    """(T, d) packed rows → (S, d) mean of each sample's rows (zeros for an empty sample), without host
    synchronisation (unlike :class:`Segments`, which reads the longest length back)."""
    cu = cu_seqlens.to(torch.int64)
    total = rows.new_zeros(cu.shape[0] - 1, rows.shape[-1])
    total.index_add_(0, sample_of_rows(cu_seqlens, rows.shape[0]), rows)
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
        sample_of_row = sample_of_rows(cu_seqlens, num_rows)
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
