"""skinflow.eval.attention on the tiny default: shapes, renormalisation, bins, the command."""

from __future__ import annotations

import json

import pytest
import torch

import skinflow.model.tiny
from skinflow.cli import commands as cli
from skinflow.data.records import save_jsonl
from skinflow.data.synthetic import generate
from skinflow.eval.attention import BINS, RELATIVE_BINS, answer_image_attention, bin_shares, lesion_share
from skinflow.formats import diagnosis_prompt
from skinflow.model.inference import read_image


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("attention_data")
    return save_jsonl(generate(3, seed=1, progress=False), root / "set.jsonl", image_dir=root / "images",
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


def test_lesion_share_by_hand():
    # a 2 × 2 grid; the lesion is the top-left quarter of a 4 × 4 image
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[:2, :2] = True
    focused = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    uniform = torch.full((3, 4), 0.25)
    assert lesion_share(focused, (2, 2), mask) == {"attention": 1.0, "area": 0.25, "ratio": 4.0}
    assert lesion_share(uniform, (2, 2), mask) == {"attention": 0.25, "area": 0.25, "ratio": 1.0}
    # half of a token's pixels are lesion: half its weight counts
    half = torch.zeros(4, 4, dtype=torch.bool)
    half[:1, :2] = True
    assert lesion_share(focused, (2, 2), half)["attention"] == 0.5
    assert lesion_share(focused, (2, 2), torch.zeros(4, 4))["ratio"] == 0.0
    with pytest.raises(ValueError, match="weights must be"):
        lesion_share(torch.ones(1, 3), (2, 2), mask)


def test_records_with_a_lesion_mask_get_the_lesion_share(dataset, tmp_path):
    from PIL import Image

    from skinflow.data.records import load_jsonl
    from skinflow.eval.attention import attention_analysis

    model, processor = skinflow.model.tiny.build(seed=0)
    record = load_jsonl(dataset, progress=False)[0]
    mask = Image.new("L", Image.open(record["image_path"]).size, 0)
    mask.paste(255, (0, 0, mask.width // 2, mask.height // 2))
    mask.save(tmp_path / "mask.png")
    record = {**record, "lesion_mask_path": str(tmp_path / "mask.png")}
    summary = attention_analysis(model, processor, [record], tmp_path, max_new_tokens=4, overlays=0)
    lesion = summary["per_record"][0].get("lesion")
    if summary["analysed"]:
        assert lesion["area"] == pytest.approx(0.25, abs=0.1) and 0.0 <= lesion["attention"] <= 1.0
        assert summary["lesion"]["records"] == 1
