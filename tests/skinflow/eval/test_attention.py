"""skinflow.eval.attention on the tiny default: shapes, renormalisation, bins, lesion focus, the command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import skinflow.model.tiny
from skinflow.cli import commands as cli
from skinflow.data import synthetic
from skinflow.data.records import load_jsonl
from skinflow.data.synthetic import generate
from skinflow.eval.attention import (
    BINS,
    RELATIVE_BINS,
    answer_image_attention,
    attention_analysis,
    bin_shares,
    lesion_focus,
    lesion_fractions,
    lesion_mask_problems,
    lesion_share,
    load_lesion_mask,
)
from skinflow.formats import diagnosis_prompt
from skinflow.model.inference import read_image


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("attention_data")
    return synthetic.save(generate(3, seed=1, progress=False), root / "set.jsonl", image_dir=root / "images",
                          progress=False)


def test_bins_by_hand():
    shares = bin_shares(torch.tensor([0.0, 0.005, 0.01, 0.015, 0.055, 0.06, 0.5, 0.03]), BINS)
    assert list(shares) == ["0-0.01", "0.01-0.02", "0.02-0.03", "0.03-0.04", "0.04-0.05", "0.05-0.06", ">0.06"]
    assert shares == {"0-0.01": 2 / 8, "0.01-0.02": 2 / 8, "0.02-0.03": 0.0, "0.03-0.04": 1 / 8, "0.04-0.05": 0.0,
                      "0.05-0.06": 1 / 8, ">0.06": 2 / 8}
    assert sum(bin_shares(torch.rand(100) * 5, RELATIVE_BINS).values()) == pytest.approx(1.0)
    assert set(bin_shares(torch.zeros(0), BINS).values()) == {0.0}


def test_answer_attention_shapes_on_the_tiny_default(dataset):
    model, processor = skinflow.model.tiny.build(seed=0)
    record = json.loads(dataset.read_text().splitlines()[0])
    image = read_image(dataset.parent / record["image_path"], "image", processor.image_processor)
    before = model.config._attn_implementation
    result = answer_image_attention(model, processor, image, diagnosis_prompt(6), "1. psoriasis\n2. eczema")
    assert model.config._attn_implementation == before  # the eager pass does not change the model
    weights = result["weights"]
    rows, columns = result["grid"]
    assert weights.shape[1] == rows * columns and weights.shape[0] >= 3
    assert torch.allclose(weights.sum(dim=1), torch.ones(weights.shape[0]), atol=1e-5)
    assert (weights >= 0).all() and 0.0 < result["image_share"] <= 1.0
    assert result["layers"] == model.config.text_config.num_hidden_layers
    assert result["heads"] == model.config.text_config.num_attention_heads
    assert answer_image_attention(model, processor, image, diagnosis_prompt(6), "") is None


def test_the_attention_command(dataset, tmp_path, capsys):
    out = tmp_path / "attention"
    assert cli.main(["attention", "--data", str(dataset), "--out", str(out), "--max-new-tokens", "6",
                     "--overlays", "2"]) == 0
    summary = json.loads((out / "attention.json").read_text())
    assert summary["records"] == 3 and summary["analysed"] <= 3
    assert sum(summary["bins"].values()) == pytest.approx(1.0) or summary["analysed"] == 0
    assert len(summary["bins"]) == 7 and len(summary["relative_bins"]) == 7
    overlays = sorted(p.name for p in (out / "overlays").iterdir())
    assert overlays == ["0000.png", "0001.png"][: len(overlays)] and overlays
    assert "analysed" in capsys.readouterr().out
    # the synthetic set's masks travel through the command: every analysed record has its lesion share
    assert all("lesion" in entry for entry in summary["per_record"] if entry["answer_tokens"])
    assert summary["lesion"]["records"] == summary["analysed"] and summary["lesion"]["empty_masks"] == 0


def _one_patch_mask(rows: slice, columns: slice, side: int = 112) -> torch.Tensor:
    mask = torch.zeros(side, side, dtype=torch.bool)
    mask[rows, columns] = True
    return mask


def test_lesion_share_by_hand():
    # 112 px, the tiny default's 7 x 7 merged grid: token (1, 2) is rows 16-31, columns 32-47 (row-major index 9)
    one = _one_patch_mask(slice(16, 32), slice(32, 48))
    on_it = torch.zeros(3, 49)
    on_it[:, 9] = 1.0
    assert lesion_share(on_it, (7, 7), one) == {"attention": 1.0, "area": 1 / 49, "focus": pytest.approx(49.0)}
    uniform = lesion_share(torch.full((2, 49), 1 / 49), (7, 7), one)
    assert uniform["attention"] == pytest.approx(1 / 49) and uniform["focus"] == pytest.approx(1.0)
    beside = torch.zeros(1, 49)
    beside[0, 10] = 1.0
    assert lesion_share(beside, (7, 7), one) == {"attention": 0.0, "area": 1 / 49, "focus": 0.0}
    split = torch.zeros(2, 49)
    split[0, 9], split[0, 10], split[1, 9] = 0.25, 0.75, 1.0  # token means: (0.25 + 1.0) / 2 on the lesion
    assert lesion_share(split, (7, 7), one)["attention"] == pytest.approx(0.625)
    # half a token's pixels are lesion: its weight counts half, and so does its area
    half = _one_patch_mask(slice(16, 24), slice(32, 48))
    assert lesion_share(on_it, (7, 7), half) == {"attention": 0.5, "area": 0.5 / 49, "focus": pytest.approx(49.0)}
    # an empty mask: no lesion, so no ratio (documented: focus None, left out of the set's focus)
    assert lesion_share(on_it, (7, 7), torch.zeros(112, 112)) == {"attention": 0.0, "area": 0.0, "focus": None}
    with pytest.raises(ValueError, match="weights must be"):
        lesion_share(torch.ones(1, 3), (2, 2), one)
    with pytest.raises(ValueError, match="mask must be 2-D"):
        lesion_share(on_it, (7, 7), torch.zeros(3, 112, 112))


def test_lesion_fractions_are_exact_area_shares():
    # 10 px onto 3 cells of 3 1/3 px: the top half of the image covers the first cell and half the second
    top = torch.zeros(10, 10, dtype=torch.bool)
    top[:5] = True
    fractions = lesion_fractions(top, (3, 3)).reshape(3, 3)
    assert torch.allclose(fractions, torch.tensor([[1.0] * 3, [0.5] * 3, [0.0] * 3], dtype=torch.float64))
    assert float(fractions.mean()) == pytest.approx(0.5)  # the mean fraction is the lesion's share of the image
    mask = torch.rand(37, 53, generator=torch.Generator().manual_seed(0)) > 0.7
    assert float(lesion_fractions(mask, (5, 4)).mean()) == pytest.approx(float(mask.double().mean()))
    # a divisible grid is the plain block mean (what adaptive average pooling gives)
    pooled = torch.nn.functional.adaptive_avg_pool2d(mask[:35, :52].double()[None, None], (7, 4))[0, 0].reshape(-1)
    assert torch.allclose(lesion_fractions(mask[:35, :52], (7, 4)), pooled)


def test_lesion_focus_over_a_set_by_hand():
    entries = [{"attention": 0.5, "area": 0.25, "focus": 2.0}, {"attention": 0.1, "area": 0.1, "focus": 1.0},
               {"attention": 0.0, "area": 0.0, "focus": None}]
    summary = lesion_focus(entries, bootstrap=200, seed=3)
    assert {key: summary[key] for key in ("records", "empty_masks", "record_focus", "above_uniform")} == {
        "records": 2, "empty_masks": 1, "record_focus": 1.5, "above_uniform": 0.5}
    assert summary["attention"] == pytest.approx(0.3) and summary["area"] == pytest.approx(0.175)
    assert summary["focus"] == pytest.approx(0.6 / 0.35)  # the ratio of the means
    low, high = summary["focus_ci"]
    assert 1.0 <= low <= summary["focus"] <= high <= 2.0
    assert lesion_focus(entries, bootstrap=200, seed=3) == summary  # seeded: the same interval every time
    assert lesion_focus(entries, bootstrap=0)["focus_ci"] is None
    same = lesion_focus([{"attention": 0.2, "area": 0.1, "focus": 2.0}] * 5, bootstrap=50)
    assert same["focus_ci"] == [pytest.approx(2.0), pytest.approx(2.0)]
    assert lesion_focus([]) is None
    assert lesion_focus(entries[2:])["records"] == 0 and lesion_focus(entries[2:])["focus"] is None


def test_lesion_masks_are_read_and_checked(dataset, tmp_path):
    records = load_jsonl(dataset, progress=False)
    for record in records:
        mask = load_lesion_mask(record)
        assert mask.dtype == torch.bool and tuple(mask.shape) == (112, 112)
        assert np.array_equal(mask.numpy(), synthetic.lesion_mask(record))
    assert load_lesion_mask({**records[0], "lesion_mask_path": None}) is None
    assert lesion_mask_problems(records) == []
    small = tmp_path / "small.png"
    Image.new("L", (56, 56), 255).save(small)
    bad = [{**records[0], "lesion_mask_path": str(tmp_path / "gone.png")}, {**records[1], "lesion_mask_path": str(small)}]
    problems = lesion_mask_problems([*bad, records[2]])
    assert len(problems) == 2
    assert "record 'synthetic-1-000000': lesion mask" in problems[0] and "gone.png" in problems[0]
    assert "not found" in problems[0]
    assert "record 'synthetic-1-000001'" in problems[1] and "56 x 56 px, the image 112 x 112 px" in problems[1]
    model, processor = skinflow.model.tiny.build(seed=0)
    out = tmp_path / "refused"
    out.mkdir()
    with pytest.raises(ValueError, match="2 of 3 records have an unusable lesion mask"):
        attention_analysis(model, processor, [*bad, records[2]], out, max_new_tokens=2)
    assert list(out.iterdir()) == []  # refused before any record was analysed


def test_attention_analysis_reports_the_lesion_focus_end_to_end(dataset, tmp_path):
    """The synthetic set with masks, the tiny default (random: the numbers mean nothing), three records."""
    model, processor = skinflow.model.tiny.build(seed=0)
    records = load_jsonl(dataset, progress=False)
    summary = attention_analysis(model, processor, records, tmp_path, max_new_tokens=4, overlays=1, bootstrap=100)
    assert summary["analysed"] == 3  # the tiny default of seed 0 answers these three with tokens
    assert json.loads((tmp_path / "attention.json").read_text()) == summary
    for entry, record in zip(summary["per_record"], records):
        lesion = entry["lesion"]
        mask = synthetic.lesion_mask(record)
        assert lesion["area"] == pytest.approx(mask.mean())  # 112 px onto 7 x 7: the exact pixel share
        assert 0.0 <= lesion["attention"] <= 1.0 and lesion["focus"] == pytest.approx(lesion["attention"] / lesion["area"])
    lesion = summary["lesion"]
    assert lesion["records"] == 3 and lesion["empty_masks"] == 0
    areas = [entry["lesion"]["area"] for entry in summary["per_record"]]
    assert lesion["area"] == pytest.approx(sum(areas) / 3)
    assert lesion["focus"] == pytest.approx(lesion["attention"] / lesion["area"])
    assert lesion["focus_ci"][0] <= lesion["focus"] <= lesion["focus_ci"][1]
    assert 0.5 < lesion["focus"] < 2.0  # random weights: attention near uniform over the 49 tokens
    assert summary["settings"]["bootstrap"] == 100 and "lesion" in summary["settings"]
    assert (tmp_path / "overlays" / "0000.png").is_file() and summary["per_record"][0]["overlay"] == "overlays/0000.png"
