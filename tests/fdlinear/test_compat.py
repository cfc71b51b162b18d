"""Checkpoints of the public reference FDLinear (FDConv repository) load and reproduce its outputs and gradients.

Fixtures: tests/fixtures/fdconv_compat/ (see its SOURCE.md), recorded from the reference in float32.
"""

from pathlib import Path

import pytest
import torch

from fdlinear import FDLinear
from fdlinear.spectral import frequency_groups, groups_from_indices

FIXTURES = sorted((Path(__file__).parent / "fixtures" / "fdconv_compat").glob("*.pt"))
TOLERANCE = 1e-5  # relative to the largest magnitude of each recorded tensor


def _close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    error = (actual.detach() - expected).abs().max().item()
    assert error <= TOLERANCE * expected.abs().max().item(), f"{what}: max error {error:.3e}"


def _load(path: Path) -> tuple[dict, FDLinear]:
    record = torch.load(path, weights_only=True)
    config = record["config"]
    layer = FDLinear(config["in_features"], config["out_features"], bias=config["bias"],
                     num_bases=config["kernel_num"], partition="fdconv")
    layer.load_state_dict(record["state_dict"])
    return record, layer


def test_fixtures_are_present():
    assert len(FIXTURES) == 4


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_partition_matches_reference_indices(path):
    record, layer = _load(path)
    config = record["config"]
    expected = groups_from_indices(record["indices"], config["out_features"], config["in_features"])
    assert torch.equal(layer.frequency_groups, expected)
    assert torch.equal(frequency_groups(config["out_features"], config["in_features"], config["kernel_num"], "fdconv"),
                       expected)


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_packed_forward_and_every_gradient(path):
    record, layer = _load(path)
    layer.train()
    x = record["packed_x"].clone().requires_grad_(True)
    y = layer(x, record["cu_seqlens"])
    _close(y, record["packed_y"], "packed_y")
    y.backward(record["grad_output"])
    _close(x.grad, record["grad_x"], "grad_x")
    params = dict(layer.named_parameters())
    assert set(params) == set(record["grad_params"])
    for name, grad in record["grad_params"].items():
        _close(params[name].grad, grad, f"grad {name}")


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_batched_forward(path):
    record, layer = _load(path)
    layer.eval()
    with torch.no_grad():
        _close(layer(record["batched_x"]), record["batched_y"], "batched_y")


def test_state_dict_saves_back_in_the_reference_layout():
    record, layer = _load(FIXTURES[0])
    saved = layer.state_dict()
    assert set(saved) == set(record["state_dict"])
    for name, tensor in record["state_dict"].items():
        assert saved[name].shape == tensor.shape and torch.equal(saved[name], tensor)
