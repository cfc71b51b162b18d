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
    (a weak reference) at the same version, so an in-place change recomputes it. A CPU tensor's values are
    also compared with a copy taken when the entry was made (a few integers, no synchronisation), so a change
    torch does not count (a shared numpy buffer, an edit through ``.data``) recomputes it too. On a GPU that
    comparison would be a read-back, so there the version alone decides; the kernels read only the private,
    checked copy that :func:`checked_boundaries` remembers, so an uncounted change cannot make them read or
    write out of bounds. Nothing is remembered for inference tensors (they have no version counter), while
    compiling, or during CUDA graph capture (the values would live in the graph's memory pool).
    """

    def __init__(self, capacity: int = 32) -> None:
        self._entries: OrderedDict[tuple, _Entry] = OrderedDict()
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
            if entry is not None and entry.holds(cu_seqlens):
                self._entries.move_to_end(full_key)
                return entry.value
        value = compute()
        snapshot = None
        if cu_seqlens.device.type == "cpu" and not is_checked_copy(cu_seqlens):
            snapshot = cu_seqlens.clone()
        with self._lock:
            reference = weakref.ref(cu_seqlens, self._dead.append)
            self._entries[full_key] = _Entry(reference, cu_seqlens._version, snapshot, value)
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
        for full_key in [k for k, entry in self._entries.items() if id(entry.reference) in dead]:
            del self._entries[full_key]

    @staticmethod
    def _cacheable(cu_seqlens: Tensor) -> bool:
        if torch.compiler.is_compiling() or torch.is_inference(cu_seqlens):
            return False
        return not (cu_seqlens.is_cuda and torch.cuda.is_current_stream_capturing())


@dataclass(frozen=True)
class _Entry:
    reference: weakref.ref
    version: int
    snapshot: Tensor | None  # the values when the entry was made (CPU tensors only)
    value: object

    def holds(self, cu_seqlens: Tensor) -> bool:
        """Whether this entry was made for ``cu_seqlens`` as it is now."""
        if self.reference() is not cu_seqlens or self.version != cu_seqlens._version:
            return False
        return self.snapshot is None or torch.equal(self.snapshot, cu_seqlens)


BOUNDARY_CACHE = BoundaryCache()


_CHECKED_ROWS = "_fdlinear_checked_rows"  # attribute of a private checked copy: the row count it was checked for


def is_checked_copy(cu_seqlens: Tensor) -> bool:
    """Whether ``cu_seqlens`` is a private copy made by :func:`checked_boundaries` (never handed out for editing)."""
    return getattr(cu_seqlens, _CHECKED_ROWS, None) is not None


def check_boundaries_argument(cu_seqlens: object, device: torch.device) -> None:
    """Raise a TypeError/ValueError naming ``cu_seqlens`` when it is not a 1-D int32/int64 tensor on ``device``
    (no values read)."""
    if not isinstance(cu_seqlens, Tensor):
        raise TypeError(f"cu_seqlens must be a tensor, got {type(cu_seqlens).__name__}")
    if cu_seqlens.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"cu_seqlens must be int32 or int64, got {cu_seqlens.dtype}")
    if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 1:
        raise ValueError(f"cu_seqlens must be 1-D with S+1 >= 1 entries, got shape {tuple(cu_seqlens.shape)}")
    if cu_seqlens.device != device:
        raise ValueError(f"cu_seqlens is on {cu_seqlens.device} but x is on {device}")


def checked_boundaries(cu_seqlens: Tensor, num_rows: int, device: torch.device) -> Tensor:
    """(S+1,) boundaries after checking them against ``num_rows`` packed rows on ``device``: start at 0,
    non-decreasing, end at ``num_rows``, else a ValueError naming ``cu_seqlens``.

    Returns a private copy of the checked values (the same object for the same tensor while it is unchanged,
    see :class:`BoundaryCache`), which is what the kernels and every derived value read, so nothing a caller
    does to its tensor afterwards can make a kernel index out of bounds. Reading the values is a host
    synchronisation on a GPU: it happens once per boundaries tensor and version. While tracing
    (``torch.compile``) and for meta tensors there are no values: ``cu_seqlens`` comes back unchecked, and the
    op checks the real tensor when it runs.
    """
    check_boundaries_argument(cu_seqlens, device)
    if torch.compiler.is_compiling() or cu_seqlens.device.type == "meta":
        return cu_seqlens
    if getattr(cu_seqlens, _CHECKED_ROWS, None) == num_rows:
        return cu_seqlens
    return BOUNDARY_CACHE.get(cu_seqlens, ("checked", num_rows), lambda: _checked_copy(cu_seqlens, num_rows))


def _checked_copy(cu_seqlens: Tensor, num_rows: int) -> Tensor:
    values = cu_seqlens.clone()  # first copied, then checked: a concurrent edit cannot slip between the two
    steps = values[1:] - values[:-1]
    first, last = values[0], values[-1]
    flags = torch.stack([first != 0, (steps < 0).any(), last != num_rows])
    if flags.any().item():  # the one read-back; the messages below read more only when raising
        if flags[0]:
            raise ValueError(f"cu_seqlens must start at 0, got {int(first)}")
        if flags[1]:
            raise ValueError("cu_seqlens must be non-decreasing")
        raise ValueError(f"cu_seqlens must end at the token count {num_rows}, got {int(last)}")
    setattr(values, _CHECKED_ROWS, num_rows)
    return values


def uniform_boundaries(num_samples: int, num_rows: int, device: torch.device) -> Tensor:
    """(S+1,) int64 boundaries of ``num_samples`` samples of equal length over ``num_rows`` rows, built from the
    sizes alone (nothing read back), as a checked copy (see :func:`checked_boundaries`)."""
    per_sample, rest = divmod(num_rows, num_samples) if num_samples else (0, num_rows)
    if rest:
        raise ValueError(f"cu_seqlens: {num_rows} rows cannot form {num_samples} samples of equal length")
    values = torch.arange(num_samples + 1, device=device, dtype=torch.int64) * per_sample
    if not torch.compiler.is_compiling():
        setattr(values, _CHECKED_ROWS, num_rows)
    return values


def sample_of_rows(cu_seqlens: Tensor, num_rows: int) -> Tensor:
    """(T,) int64 sample index of every row, for (S+1,) boundaries over ``num_rows`` packed rows. No host
    synchronisation (the output size is given); remembered per boundaries tensor (:class:`BoundaryCache`).

    Safe on any values: every index lies in [0, S-1] (0 when S = 0), even for boundaries that are not
    consistent with ``num_rows`` (which the op refuses; this map may be traced before that check runs)."""
    def compute() -> Tensor:
        cu = cu_seqlens.to(torch.int64)
        rows = torch.arange(num_rows, device=cu.device)
        # Row t belongs to the sample whose end is the first boundary after t.
        return torch.searchsorted(cu[1:].contiguous(), rows, right=True).clamp_(max=max(cu.shape[0] - 2, 0))

    return BOUNDARY_CACHE.get(cu_seqlens, ("sample_of_rows", num_rows), compute)


def segment_mean(rows: Tensor, cu_seqlens: Tensor) -> Tensor:
    """(T, d) packed rows → (S, d) mean of each sample's rows (zeros for an empty sample), without host
    synchronisation (unlike :class:`Segments`, which reads the longest length back)."""
    cu = cu_seqlens.to(torch.int64)
    total = rows.new_zeros(cu.shape[0] - 1, rows.shape[-1])
    if total.shape[0] == 0:  # no samples: nothing to add into (the op refuses rows without samples)
        return total
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
