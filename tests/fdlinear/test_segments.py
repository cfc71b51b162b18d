"""BoundaryCache: values derived from a cu_seqlens tensor are computed once per tensor and version."""

import gc

import pytest
import torch

from fdlinear.segments import BoundaryCache, sample_of_rows, segment_mean


class Counter:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> int:
        self.calls += 1
        return self.calls


def test_same_tensor_and_version_reuse_the_value():
    cache, compute = BoundaryCache(), Counter()
    cu = torch.tensor([0, 2, 5])
    assert cache.get(cu, ("a",), compute) == 1
    assert cache.get(cu, ("a",), compute) == 1
    assert cache.get(cu, ("b",), compute) == 2  # another key: computed
    assert cache.get(cu.clone(), ("a",), compute) == 3  # equal values, another tensor: computed
    cu.add_(0)  # in place: the version changes
    assert cache.get(cu, ("a",), compute) == 4
    cu[1:].mul_(1)  # a view shares the version counter
    assert cache.get(cu, ("a",), compute) == 5
    assert cache.get(cu, ("a",), compute) == 5


def test_dead_tensors_and_inference_tensors_are_not_reused():
    cache, compute = BoundaryCache(), Counter()
    cu = torch.tensor([0, 3])
    cache.get(cu, ("a",), compute)
    del cu
    gc.collect()
    again = torch.tensor([0, 3])  # may reuse the id of the dead tensor
    assert cache.get(again, ("a",), compute) == 2
    assert len(cache) == 1  # the dead tensor's entry was dropped
    with torch.inference_mode():
        frozen = torch.tensor([0, 3])
    assert cache.get(frozen, ("a",), compute) == 3
    assert cache.get(frozen, ("a",), compute) == 4


def test_capacity_evicts_the_least_recently_used():
    cache, compute = BoundaryCache(capacity=2), Counter()
    cu = torch.tensor([0, 1])
    cache.get(cu, ("a",), compute)
    cache.get(cu, ("b",), compute)
    cache.get(cu, ("a",), compute)  # a is now the most recent
    cache.get(cu, ("c",), compute)  # evicts b
    assert cache.get(cu, ("a",), compute) == 1
    assert cache.get(cu, ("b",), compute) == 4
    cache.clear()
    assert cache.get(cu, ("a",), compute) == 5


def test_a_failed_computation_is_not_remembered():
    cache = BoundaryCache()
    cu = torch.tensor([0, 1])

    def fail() -> int:
        raise ValueError("bad")

    for _ in range(2):
        with pytest.raises(ValueError, match="bad"):
            cache.get(cu, ("a",), fail)


def test_sample_maps_and_means_on_ragged_empty_samples():
    cu = torch.tensor([0, 3, 3, 4, 7])
    assert sample_of_rows(cu, 7).tolist() == [0, 0, 0, 2, 3, 3, 3]
    assert sample_of_rows(torch.tensor([0, 0]), 0).tolist() == []
    rows = torch.randn(7, 5, dtype=torch.float64)
    expected = torch.stack([rows[:3].mean(0), torch.zeros(5, dtype=torch.float64), rows[3], rows[4:].mean(0)])
    torch.testing.assert_close(segment_mean(rows, cu), expected)
