"""Fitzpatrick17k loader: packaged metadata, filters, missing/corrupt images, splits, hold-out, SkinCon captions.

The image directory is built in tmp_path with small JPEGs named after real metadata rows, plus a truncated JPEG,
a file that is no image, files that are not in the metadata, and rows left without a file.
"""

import hashlib
import io
import random
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from skinflow.data import fitzpatrick17k as f17k
from skinflow.data import skincon
from skinflow.data.fitzpatrick17k import MetadataRow, assign_splits, load
from skinflow.data.records import validate_records
from skinflow.taxonomy import LABELS

ROWS = f17k.metadata()
CAPTIONS = skincon.captions()


_TAKEN: set[str] = set()


def _pick(predicate, count=None):
    """The first row (or ``count`` rows) matching ``predicate`` that no earlier pick took."""
    found = [row for row in ROWS if row.md5hash not in _TAKEN and predicate(row)][: count or 1]
    _TAKEN.update(row.md5hash for row in found)
    return found if count else found[0]


DIAGNOSTIC = _pick(lambda row: row.qc == "1 Diagnostic")
WRONG = _pick(lambda row: row.qc == "3 Wrongly labelled")
UNKNOWN_SKIN = _pick(lambda row: row.skin_type is None and row.qc is None)
CAPTIONED = _pick(lambda row: row.md5hash in CAPTIONS and row.qc is None)
EXCLUDED = _pick(lambda row: row.md5hash in skincon.excluded_images() and row.qc is None)
PLAIN = _pick(lambda row: row.label == DIAGNOSTIC.label and row.qc is None, count=6)
TRUNCATED = _pick(lambda row: row.qc is None and row.label == CAPTIONED.label)
NOT_AN_IMAGE = _pick(lambda row: row.qc is None and row.label == EXCLUDED.label)
GOOD = [DIAGNOSTIC, WRONG, UNKNOWN_SKIN, CAPTIONED, EXCLUDED, *PLAIN]
LABEL_SET = {row.label for row in [*GOOD, TRUNCATED, NOT_AN_IMAGE]}


def _jpeg(seed: int, size: int = 16) -> bytes:
    rng = random.Random(seed)
    image = Image.frombytes("RGB", (size, size), bytes(rng.randrange(256) for _ in range(size * size * 3)))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fitzpatrick17k_images")
    (root / "nested").mkdir()
    for seed, row in enumerate(GOOD):
        folder = root / "nested" if row is PLAIN[0] else root
        suffix = ".JPEG" if row is PLAIN[1] else ".jpg"
        (folder / f"{row.md5hash}{suffix}").write_bytes(_jpeg(seed))
    full = _jpeg(99, size=64)
    (root / f"{TRUNCATED.md5hash}.jpg").write_bytes(full[: len(full) // 2])
    (root / f"{NOT_AN_IMAGE.md5hash}.jpg").write_bytes(b"this is not an image")
    (root / "readme.jpg").write_bytes(_jpeg(100))
    (root / f"{'0' * 32}.jpg").write_bytes(_jpeg(101))
    (root / "notes.txt").write_text("ignored: not an image suffix")
    return root


def _expected_rows(qc=f17k.DEFAULT_QC):
    return [row for row in ROWS if (qc is None or row.qc in qc) and row.label in LABEL_SET]


def test_metadata_matches_the_source():
    assert len(ROWS) == 16577
    assert len({row.md5hash for row in ROWS}) == 16577
    assert {row.label for row in ROWS} == set(LABELS)
    assert Counter(row.qc for row in ROWS) == {
        None: 16073,
        "1 Diagnostic": 348,
        "5 Potentially": 97,
        "2 Characteristic": 32,
        "3 Wrongly labelled": 17,
        "4 Other": 10,
    }
    assert sum(row.skin_type is None for row in ROWS) == 565
    assert sum(row.url is None for row in ROWS) == 41
    assert {row.skin_type for row in ROWS} == {None, 1, 2, 3, 4, 5, 6}


def test_load_counts_missing_corrupt_and_unmatched(image_dir):
    result = load(image_dir, labels=LABEL_SET, progress=False)
    report = result.report
    expected = _expected_rows()
    good_kept = [row for row in GOOD if row is not WRONG]
    assert report.total == 16577
    assert report.dropped_qc == 17
    assert report.dropped_skin_type == 0
    assert report.dropped_label == 16577 - 17 - len(expected)
    assert report.corrupt == 2
    assert {Path(path).stem for path, _ in report.corrupt_files} == {TRUNCATED.md5hash, NOT_AN_IMAGE.md5hash}
    assert any("truncated" in reason for _, reason in report.corrupt_files)
    assert report.missing == len(expected) - len(good_kept) - 2
    assert set(report.missing_ids) == {row.md5hash for row in expected} - {row.md5hash for row in good_kept} - {
        TRUNCATED.md5hash,
        NOT_AN_IMAGE.md5hash,
    }
    assert report.kept == len(good_kept) == len(result.records)
    assert report.unmatched_files == 2  # readme.jpg and the md5-named file that is not in the metadata
    assert sum(report.splits.values()) == report.kept
    assert report.with_caption == sum(row.md5hash in CAPTIONS for row in good_kept) >= 1
    assert report.images_checked
    assert [record["id"] for record in result.records] == [row.md5hash for row in ROWS if row in good_kept]


def test_summary_reports_every_count(image_dir):
    result = load(image_dir, labels=LABEL_SET, progress=False)
    text = result.summary()
    report = result.report
    assert str(image_dir) in text
    for label in ("metadata rows", "dropped by qc filter", "image missing", "image corrupt", "kept", "splits:"):
        assert label in text
    assert f"{report.missing:,}" in text and "16,577" in text
    assert "truncated" in text
    assert "2 image files in the directory are not in the metadata" in text


def test_records_follow_the_contract_and_carry_skincon_captions(image_dir):
    records = load(image_dir, labels=LABEL_SET, progress=False).records
    validate_records(records)
    by_id = {record["id"]: record for record in records}
    assert by_id[CAPTIONED.md5hash]["caption"] == CAPTIONS[CAPTIONED.md5hash]
    assert by_id[CAPTIONED.md5hash]["has_caption"] is True
    assert by_id[EXCLUDED.md5hash]["has_caption"] is False
    assert not any(by_id[EXCLUDED.md5hash]["caption"].values())
    assert by_id[UNKNOWN_SKIN.md5hash]["skin_type"] is None
    nested = by_id[PLAIN[0].md5hash]["image_path"]
    assert Path(nested).is_absolute() and Path(nested).parent.name == "nested"
    assert by_id[PLAIN[1].md5hash]["image_path"].endswith(".JPEG")
    record = by_id[DIAGNOSTIC.md5hash]
    assert record["source"] == "fitzpatrick17k" and record["qc"] == "1 Diagnostic"
    assert record["label"] == DIAGNOSTIC.label and record["url"] == DIAGNOSTIC.url
    assert record["skin_type_centaur"] == DIAGNOSTIC.skin_type_centaur
    assert "image" not in record


def test_filters(image_dir):
    everything = load(image_dir, labels=LABEL_SET, qc=None, progress=False)
    assert everything.report.dropped_qc == 0
    assert WRONG.md5hash in {record["id"] for record in everything.records}

    unknown = load(image_dir, skin_types={None}, labels=LABEL_SET, progress=False)
    assert [record["id"] for record in unknown.records] == [
        row.md5hash for row in ROWS if row in GOOD and row.skin_type is None and row is not WRONG
    ]
    assert unknown.report.dropped_skin_type == sum(row.skin_type is not None for row in ROWS if row.qc != WRONG.qc)

    diagnostic_only = load(image_dir, qc={"1 Diagnostic"}, labels=LABEL_SET, progress=False)
    assert [record["id"] for record in diagnostic_only.records] == [DIAGNOSTIC.md5hash]
    assert diagnostic_only.report.dropped_qc == 16577 - 348

    one_label = load(image_dir, labels={CAPTIONED.label}, progress=False)
    assert {record["label"] for record in one_label.records} == {CAPTIONED.label}


def test_arguments_are_checked(image_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="image_dir"):
        load(tmp_path / "nowhere", progress=False)
    (tmp_path / "file.jpg").write_bytes(b"x")
    with pytest.raises(NotADirectoryError, match="image_dir"):
        load(tmp_path / "file.jpg", progress=False)
    with pytest.raises(TypeError, match="qc must be"):
        load(image_dir, qc="1 Diagnostic", progress=False)
    with pytest.raises(ValueError, match="qc has values"):
        load(image_dir, qc={"6 Great"}, progress=False)
    with pytest.raises(ValueError, match="skin_types has values"):
        load(image_dir, skin_types={7}, progress=False)
    with pytest.raises(ValueError, match="skin_types has values"):
        load(image_dir, skin_types={True}, progress=False)
    with pytest.raises(ValueError, match="did you mean 'melanoma'"):
        load(image_dir, labels={"melanomas"}, progress=False)
    with pytest.raises(ValueError, match="split_fractions"):
        load(image_dir, split_fractions=(0.5, 0.2, 0.2), progress=False)
    with pytest.raises(TypeError, match="split_fractions"):
        load(image_dir, split_fractions=(0.8, 0.2), progress=False)
    with pytest.raises(ValueError, match="holdout"):
        load(image_dir, holdout="expert", progress=False)
    with pytest.raises(ValueError, match="needs '1 Diagnostic' in qc"):
        load(image_dir, holdout="diagnostic", qc={None}, progress=False)


def test_diagnostic_holdout_puts_expert_reviewed_images_in_test(image_dir):
    result = load(image_dir, labels=LABEL_SET, holdout="diagnostic", progress=False)
    splits = {record["id"]: record["split"] for record in result.records}
    assert splits[DIAGNOSTIC.md5hash] == "test"
    assert all(record["qc"] == "1 Diagnostic" for record in result.records if record["split"] == "test")
    assert result.report.holdout == "diagnostic"
    assert "'1 Diagnostic' hold-out" in result.summary()


def test_check_images_false_only_checks_existence(image_dir):
    result = load(image_dir, labels=LABEL_SET, check_images=False, progress=False)
    ids = {record["id"] for record in result.records}
    assert {TRUNCATED.md5hash, NOT_AN_IMAGE.md5hash} <= ids
    assert result.report.corrupt == 0 and not result.report.images_checked
    assert "not decoded" in result.summary()


def test_progress_bar_and_empty_directory(tmp_path):
    result = load(tmp_path, labels={DIAGNOSTIC.label}, progress=True)
    assert result.records == [] and result.report.kept == 0
    assert result.report.missing == sum(row.label == DIAGNOSTIC.label and row.qc != WRONG.qc for row in ROWS)
    assert "no image of the metadata was found" in result.summary()


def _rows(label_sizes, qc=None):
    rows = []
    for label, size in label_sizes.items():
        for index in range(size):
            md5hash = hashlib.md5(f"{label}/{index}".encode()).hexdigest()
            rows.append(MetadataRow(md5hash, label, 3, 3, qc(index) if qc else None, None))
    return rows


def test_assign_splits_is_stratified_and_deterministic():
    rows = _rows({"psoriasis": 50, "melanoma": 30, "acne": 7, "lupus erythematosus": 1})
    splits = assign_splits(rows, split_seed=0)
    counts = Counter((row.label, splits[row.md5hash]) for row in rows)
    assert (counts["psoriasis", "train"], counts["psoriasis", "val"], counts["psoriasis", "test"]) == (40, 5, 5)
    assert (counts["melanoma", "train"], counts["melanoma", "val"], counts["melanoma", "test"]) == (24, 3, 3)
    assert (counts["acne", "train"], counts["acne", "val"], counts["acne", "test"]) == (5, 1, 1)
    assert counts["lupus erythematosus", "train"] == 1
    assert assign_splits(list(reversed(rows)), split_seed=0) == splits
    assert assign_splits(rows, split_seed=1) != splits
    # a label's split does not depend on the other labels
    psoriasis = [row for row in rows if row.label == "psoriasis"]
    assert assign_splits(psoriasis, split_seed=0) == {row.md5hash: splits[row.md5hash] for row in psoriasis}


def test_assign_splits_holdout_and_small_labels():
    rows = _rows({"psoriasis": 40, "melanoma": 2}, qc=lambda index: "1 Diagnostic" if index % 4 == 0 else None)
    splits = assign_splits(rows, split_seed=3, split_fractions=(0.7, 0.2, 0.1), holdout="diagnostic")
    for row in rows:
        assert (splits[row.md5hash] == "test") == (row.qc == "1 Diagnostic")
    rest = [row for row in rows if row.label == "psoriasis" and row.qc is None]
    assert Counter(splits[row.md5hash] for row in rest) == {"train": 23, "val": 7}
    two = _rows({"acne": 2})
    # the rounded val and test shares (1 + 1) leave no training image: val gives way first
    assert Counter(assign_splits(two, split_fractions=(0.5, 0.25, 0.25)).values()) == {"train": 1, "test": 1}
    with pytest.raises(TypeError, match="split_seed must be an int"):
        assign_splits(rows, split_seed=1.5)
    with pytest.raises(ValueError, match="split_fractions"):
        assign_splits(rows, split_fractions=(0.0, 0.5, 0.5))


# ---- issue 12: non-finite fractions, bools, one image check, bombs ----


@pytest.mark.parametrize(
    "fractions",
    [
        (float("nan"), 0.5, 0.5),
        (0.5, float("nan"), 0.5),
        (0.8, 0.1, float("nan")),
        (float("inf"), 0.0, 0.0),
        (1.0, float("inf"), float("-inf")),
    ],
)
def test_non_finite_split_fractions_are_refused(fractions):
    rows = _rows({"psoriasis": 10})
    with pytest.raises(ValueError, match="^split_fractions must be finite"):
        assign_splits(rows, split_fractions=fractions)


def test_wrong_types_are_refused_as_value_errors_too(image_dir):
    """Bools are no ints or fractions, and every refusal is a ValueError (the CLI's one exit path for user errors)."""
    rows = _rows({"psoriasis": 10})
    for kwargs in (
        {"split_seed": True},
        {"split_seed": 1.5},
        {"split_fractions": (True, False, False)},
        {"split_fractions": "0.8"},
        {"split_fractions": None},
        {"holdout": ["diagnostic"]},
    ):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            assign_splits(rows, **kwargs)
    for kwargs in ({"qc": 3}, {"labels": [["melanoma"]]}, {"skin_types": [{}]}):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            load(image_dir, progress=False, **kwargs)
    with pytest.raises(ValueError, match="image_dir must be a path"):
        load(3, progress=False)
    numpy = pytest.importorskip("numpy")
    assert assign_splits(rows, split_seed=numpy.int64(2), split_fractions=numpy.array([0.5, 0.25, 0.25])) == (
        assign_splits(rows, split_seed=2, split_fractions=(0.5, 0.25, 0.25))
    )


def test_images_over_the_decompression_bomb_limit_are_skipped(tmp_path, monkeypatch):
    row = PLAIN[0]
    (tmp_path / f"{row.md5hash}.jpg").write_bytes(_jpeg(7, size=64))  # 4,096 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)  # over the limit, under twice it: Pillow only warns
    with pytest.warns(Image.DecompressionBombWarning):
        result = load(tmp_path, labels={row.label}, progress=False)
    assert result.records == []
    [(path, reason)] = result.report.corrupt_files
    assert Path(path).stem == row.md5hash and "decompression-bomb limit" in reason
