"""The learnability probe (skinflow.experiments.probe): its patchify helper equals the Qwen2-VL image processor,
and a smoke run reports accuracies and chance levels."""

import numpy as np
import pytest

from skinflow.data.synthetic import TEXTURE_PAIRS, generate
from skinflow.experiments import probe
from skinflow.model import tiny


@pytest.fixture(scope="module")
def records():
    return generate(12, seed=0, progress=False)


def test_patchify_equals_the_qwen2_vl_image_processor(records):
    images = [r["image"] for r in records[:3]]
    expected = tiny.build_processor().image_processor(images, return_tensors="np")
    pixel_values, grid_thw = probe.patchify(images)
    assert pixel_values.dtype == np.float32 and np.array_equal(pixel_values, expected["pixel_values"])
    assert np.array_equal(grid_thw, expected["image_grid_thw"])
    assert np.array_equal(probe.patchify([np.asarray(image) for image in images])[0], pixel_values)
    with pytest.raises(ValueError, match="multiples of 16"):
        probe.patchify([np.zeros((40, 48, 3), np.uint8)])
    with pytest.raises(ValueError, match="images"):
        probe.patchify([])


def test_probe_runs_and_reports_accuracies():
    report = probe.run_probe(train=24, test=12, steps=2, batch_size=4, eval_points=1, progress=False)
    assert {"color", "shape", "number", "location", "diagnosis"} <= set(report["accuracy"])
    assert set(report["accuracy"]) == set(report["chance"])
    assert all(0.0 <= value <= 1.0 for value in [*report["accuracy"].values(), *report["chance"].values()])
    assert set(report["texture_pairs"]) == {f"{a} vs {b}" for a, b in TEXTURE_PAIRS}
    assert all(0.0 <= value <= 1.0 for value in report["texture_pairs"].values())
    assert [point["step"] for point in report["curve"]] == [1, 2] and report["wall_seconds"] > 0
    with pytest.raises(ValueError, match="steps must"):
        probe.run_probe(steps=0, progress=False)
