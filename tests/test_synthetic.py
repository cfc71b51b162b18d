"""The synthetic dermatology set: determinism, captions, rules, splits, noise, validation, contact sheet, probe."""

import time
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from skinflow.data import probe, synthetic
from skinflow.data.records import validate_records
from skinflow.data.synthetic import DIAGNOSES, TEXTURE_PAIRS, diagnose_attributes, generate
from skinflow.data.synthetic_draw import IMPLICIT_PERIOD
from skinflow.formats import CAPTION_FIELDS, FIELD_VALUES, format_caption, parse_caption
from skinflow.taxonomy import LABELS
from skinflow.tiny import IMAGE_SIZE


@pytest.fixture(scope="module")
def records():
    return generate(330, seed=0, progress=False)


def pixels(record) -> np.ndarray:
    return np.asarray(record["image"])


def test_deterministic_by_seed_and_prefix_stable(records):
    again = generate(40, seed=0, progress=False)
    for first, second in zip(records[:40], again):
        assert np.array_equal(pixels(first), pixels(second))
        assert {k: v for k, v in first.items() if k != "image"} == {k: v for k, v in second.items() if k != "image"}
    other = generate(40, seed=1, progress=False)
    assert sum(np.array_equal(pixels(a), pixels(b)) for a, b in zip(again, other)) == 0


def test_records_follow_the_contract(records):
    validate_records(records)
    for record in records:
        assert record["image"].mode == "RGB" and record["image"].size == (IMAGE_SIZE, IMAGE_SIZE)
        assert list(record["caption"]) == list(CAPTION_FIELDS)
        for field, value in record["caption"].items():
            assert value == "" or value in FIELD_VALUES[field], (field, value)
        assert parse_caption(format_caption(record["caption"])) == record["caption"]
        assert record["label"] in LABELS and record["source"] == "synthetic"
    assert len({record["id"] for record in records}) == len(records)
    assert set(Counter(record["skin_type"] for record in records)) == set(range(1, 7))


def test_labels_follow_the_documented_rules(records):
    assert all(diagnosis.label in LABELS for diagnosis in DIAGNOSES)
    for record in records:
        assert diagnose_attributes(record["caption"], record["implicit_cue"]) == record["label"]
    assert Counter(record["label"] for record in records) == Counter({d.label: 30 for d in DIAGNOSES})
    with pytest.raises(ValueError, match="matches no synthetic diagnosis"):
        diagnose_attributes(dict.fromkeys(CAPTION_FIELDS, ""), False)


def test_texture_pairs_share_describable_attributes_and_differ_in_pixels(records):
    by_label = {d.label: d for d in DIAGNOSES}
    for plain, cued in TEXTURE_PAIRS:
        assert by_label[plain].describable() == by_label[cued].describable()
        assert by_label[plain].varying == by_label[cued].varying
        assert not by_label[plain].implicit_cue and by_label[cued].implicit_cue
    # the cue is a periodic micro-grid: it puts energy at its spatial frequency inside the lesions
    def grid_energy(record) -> float:
        gray = pixels(record).astype(float).mean(-1)
        spectrum = np.abs(np.fft.fft2(gray - gray.mean()))
        k = IMAGE_SIZE // int(IMPLICIT_PERIOD)
        return spectrum[k, k] / spectrum.sum()

    for plain, cued in TEXTURE_PAIRS:
        plain_energy = np.median([grid_energy(r) for r in records if r["label"] == plain])
        cued_energy = np.median([grid_energy(r) for r in records if r["label"] == cued])
        assert cued_energy > 5 * plain_energy


def test_splits_are_stratified_in_the_requested_proportions():
    records = generate(11 * 40, seed=3, splits=(0.5, 0.25, 0.25), progress=False)
    for label in {d.label for d in DIAGNOSES}:
        counts = Counter(r["split"] for r in records if r["label"] == label)
        assert counts == {"train": 20, "val": 10, "test": 10}


def test_label_noise_is_recorded():
    records = generate(660, seed=0, label_noise=0.2, progress=False)
    noisy = [r for r in records if r["noisy_label"]]
    assert 0.13 < len(noisy) / len(records) < 0.27
    assert all(r["label"] != r["clean_label"] for r in noisy)
    assert all(r["label"] == r["clean_label"] for r in records if not r["noisy_label"])
    clean = generate(660, seed=0, progress=False)
    assert [r["clean_label"] for r in records] == [r["clean_label"] for r in clean]


def test_skin_types_argument():
    records = generate(30, skin_types=[5, 6], progress=False)
    assert {r["skin_type"] for r in records} <= {5, 6}


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(n=-1), "n must"),
        (dict(n=2.5), "n must"),
        (dict(n=1, seed=-3), "seed must"),
        (dict(n=1, image_size=8), "image_size must"),
        (dict(n=1, splits=(0.5, 0.5)), "splits must"),
        (dict(n=1, splits=(0.9, 0.2, 0.1)), "splits must"),
        (dict(n=1, label_noise=1.0), "label_noise must"),
        (dict(n=1, skin_types=[0, 7]), "skin_types must"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        generate(**kwargs, progress=False)


def test_image_size_and_speed():
    assert generate(2, image_size=160, progress=False)[0]["image"].size == (160, 160)
    start = time.perf_counter()
    generate(200, seed=5, progress=False)
    assert time.perf_counter() - start < 30  # the budget is 1,000 images in 30 s; this is a loose guard


def test_contact_sheet(records, tmp_path):
    path = synthetic.contact_sheet(records[:10], tmp_path / "sheet.png", columns=4)
    with Image.open(path) as sheet:
        assert sheet.size[0] == 4 * (IMAGE_SIZE + 4) and sheet.size[1] > 3 * IMAGE_SIZE
    with pytest.raises(ValueError, match="records"):
        synthetic.contact_sheet([], tmp_path / "empty.png")
    with pytest.raises(ValueError, match="columns"):
        synthetic.contact_sheet(records[:2], tmp_path / "x.png", columns=0)


def test_probe_runs_and_reports_accuracies():
    report = probe.run_probe(train=24, test=12, steps=2, batch_size=4, progress=False)
    assert set(report["accuracy"]) >= {"color", "shape", "diagnosis"}
    assert all(0.0 <= value <= 1.0 for value in report["accuracy"].values())
    assert set(report["texture_pairs"]) == {f"{a} vs {b}" for a, b in TEXTURE_PAIRS}
