"""skinflow.eval.metrics against hand-computed cases (docs/evaluation.md)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from skinflow.eval.metrics import (
    SKIN_GROUPS,
    EvalSettings,
    PredictionError,
    bootstrap_mean_ci,
    check_rows,
    compute_metrics,
    load_predictions,
    percentile,
)
from skinflow.formats import CAPTION_FIELDS
from tests import REPO

NO_CI = EvalSettings(bootstrap=0)


def row(label: str, answer: object, skin_type: int | None = 3, *, id: str | None = None, caption_text=None,
        caption_target=None, **extra) -> dict:
    row.count = getattr(row, "count", 0) + 1
    return {"id": id or f"r{row.count}", "label": label, "skin_type": skin_type, "split": "test",
            "diagnosis_text": answer, "caption_text": caption_text, "caption_target": caption_target, **extra}


def metrics(rows, **settings):
    return compute_metrics(rows, EvalSettings(**{"bootstrap": 0, **settings}))


def test_levels_and_ranks_by_hand():
    rows = [
        row("psoriasis", "1. eczema\n2. psoriasis"),            # exact/synonym at 2, group9/group3 at 1
        row("malignant melanoma", "1. melanoma"),                # synonym (merged label) at 1, exact never
        row("nevocytic nevus", "1. seborrheic keratosis"),       # only group3 (benign) at 1
        row("acne", "1. banana\n2. rash\n3. acne"),              # unmatched candidates count as ranks: 3
    ]
    m = metrics(rows, k=3)
    assert m["n"] == 4 and m["k"] == 3
    assert m["topk"]["exact"] == [0.0, 0.25, 0.5]
    assert m["topk"]["synonym"] == [0.25, 0.5, 0.75]
    assert m["topk"]["group9"] == [0.5, 0.5, 0.75]
    assert m["topk"]["group3"] == [0.75, 0.75, 1.0]
    # linear rank weights (K - r + 1) / K with K = 3, synonym level: 2/3, 1, 0, 1/3
    assert m["reward"]["mean"] == pytest.approx((2 / 3 + 1 + 0 + 1 / 3) / 4)
    assert m["overall"] == {"n": 4, "level": "synonym", "top1": {"value": 0.25, "ci": None},
                            "topk": {"value": 0.75, "ci": None}}


def test_overall_interval_brackets_the_value():
    rows = [row("psoriasis", "1. psoriasis" if i % 3 else "1. eczema") for i in range(30)]
    overall = compute_metrics(rows, EvalSettings(bootstrap=200, k=1))["overall"]
    low, high = overall["top1"]["ci"]
    assert overall["top1"]["value"] == pytest.approx(20 / 30) and low < 20 / 30 < high and 0 <= low and high <= 1


def test_repeated_candidates_and_synonym_restatements_are_dropped():
    # "psoriasis" twice and "malignant melanoma" after "melanoma": only 3 distinct candidates, eczema third
    rows = [row("eczema", "1. psoriasis\n2. psoriasis\n3. melanoma\n4. malignant melanoma\n5. eczema")]
    m = metrics(rows, k=3)
    assert m["topk"]["synonym"] == [0.0, 0.0, 1.0]
    m = metrics(rows, k=2)
    assert m["topk"]["synonym"] == [0.0, 0.0]
    # the truth named by a dropped repeat counts at the exact level
    m = metrics([row("malignant melanoma", "1. melanoma\n2. malignant melanoma")], k=2)
    assert m["topk"]["exact"] == [1.0, 1.0]


def test_ties_in_groups_take_the_first_rank():
    m = metrics([row("psoriasis", "1. lichen planus\n2. eczema\n3. psoriasis")], k=3)
    assert m["topk"]["group9"] == [1.0, 1.0, 1.0] and m["topk"]["synonym"] == [0.0, 0.0, 1.0]


@pytest.mark.parametrize("answer", ["", "   \n", None, 12, ["a", 3], {"x": 1}, b"1. psoriasis", "x" * 2_000_000,
                                    "I don't know"])
def test_any_answer_is_scored_and_unparseable_is_counted(answer):
    rows = [row("psoriasis", answer, caption_text=answer, caption_target={"color": "red"}),
            row("psoriasis", "1. psoriasis")]
    m = metrics(rows)
    assert m["topk"]["synonym"][0] == 0.5
    unparseable = m["unparseable"]
    assert unparseable["n"] == 2 and unparseable["count"] in (0, 1)
    if answer in ("", "   \n", None, 12, {"x": 1}, b"1. psoriasis"):
        assert unparseable == {"rate": 0.5, "count": 1, "n": 2}


def test_safety_missed_malignancy_and_overcall():
    rows = [
        row("melanoma", "1. nevocytic nevus\n2. basal cell carcinoma"),  # malignant, caught (another malignancy)
        row("melanoma", "1. nevocytic nevus\n2. seborrheic keratosis"),  # malignant, missed
        row("basal cell carcinoma", ""),                                 # malignant, missed (no answer)
        row("psoriasis", "1. melanoma\n2. psoriasis"),                   # over-call
        row("psoriasis", "1. psoriasis\n2. melanoma"),                   # malignant second: not an over-call
        row("nevocytic nevus", "1. banana\n2. melanoma"),                # first candidate matches nothing
    ]
    m = metrics(rows)
    assert m["safety"]["missed_malignancy"] == {"rate": 2 / 3, "count": 2, "n": 3}
    assert m["safety"]["overcall"] == {"rate": 1 / 3, "count": 1, "n": 3}


def test_missed_malignancy_reads_only_the_first_k_distinct_candidates():
    answer = "1. psoriasis\n2. psoriasis\n3. eczema\n4. melanoma"
    assert metrics([row("melanoma", answer)], k=3)["safety"]["missed_malignancy"]["count"] == 0
    assert metrics([row("melanoma", answer)], k=2)["safety"]["missed_malignancy"]["count"] == 1


def test_no_malignant_case_gives_a_null_rate():
    m = metrics([row("psoriasis", "1. psoriasis")])
    assert m["safety"]["missed_malignancy"] == {"rate": None, "count": 0, "n": 0}


def test_by_skin_type_groups_unknown_and_empty_groups():
    rows = [row("psoriasis", "1. psoriasis", 1), row("psoriasis", "1. eczema\n2. psoriasis", 2),
            row("psoriasis", "1. eczema", 5), row("melanoma", "1. nevocytic nevus", 6),
            row("eczema", "1. eczema", None)]
    m = compute_metrics(rows, EvalSettings(bootstrap=200, seed=1))
    by = m["by_skin_type"]
    assert list(by) == list(SKIN_GROUPS)
    assert by["1"]["n"] == 1 and by["1"]["top1"]["value"] == 1.0 and by["1"]["top1"]["ci"] == [1.0, 1.0]
    assert by["I-II"]["n"] == 2 and by["I-II"]["top1"]["value"] == 0.5 and by["I-II"]["topk"]["value"] == 1.0
    assert by["V-VI"]["n"] == 2 and by["V-VI"]["topk"]["value"] == 0.0
    assert by["V-VI"]["missed_malignancy"] == {"n": 1, "value": 1.0, "ci": [1.0, 1.0]}
    assert by["unknown"]["n"] == 1 and by["unknown"]["top1"]["value"] == 1.0
    for empty in ("3", "4", "III-IV"):
        assert by[empty] == {"n": 0, "top1": {"value": None, "ci": None}, "topk": {"value": None, "ci": None},
                             "missed_malignancy": {"n": 0, "value": None, "ci": None}}
    lo, hi = by["I-II"]["top1"]["ci"]
    assert 0.0 <= lo <= 0.5 <= hi <= 1.0
    gap = m["skin_type_gap"]
    assert gap["n"] == [2, 2] and gap["top1"]["value"] == 0.5 and gap["topk"]["value"] == 1.0
    assert -1.0 <= gap["top1"]["ci"][0] <= 0.5 <= gap["top1"]["ci"][1] <= 1.0
    assert m["worst_group"]["type"]["group"] == "5"  # 5 and 6 tie at 0; the name breaks the tie
    assert m["worst_group"]["pair"]["group"] == "V-VI"


def test_gap_is_null_without_both_groups():
    m = compute_metrics([row("psoriasis", "1. psoriasis", 1)], EvalSettings(bootstrap=50))
    assert m["skin_type_gap"]["top1"] == {"value": None, "ci": None}
    assert m["worst_group"]["type"]["group"] == "1"


def test_bootstrap_is_deterministic_per_seed():
    rows = [row("psoriasis", "1. psoriasis" if i % 3 else "1. eczema", 1 + i % 6) for i in range(60)]
    a = compute_metrics(rows, EvalSettings(bootstrap=300, seed=7))
    b = compute_metrics(rows, EvalSettings(bootstrap=300, seed=7))
    c = compute_metrics(rows, EvalSettings(bootstrap=300, seed=8))
    assert a["by_skin_type"] == b["by_skin_type"] and a["skin_type_gap"] == b["skin_type_gap"]
    assert a["by_skin_type"] != c["by_skin_type"]
    # and in a fresh process (string seeding does not depend on PYTHONHASHSEED)
    code = ("import json; from skinflow.eval.metrics import bootstrap_mean_ci as b; "
            "print(json.dumps(b([0, 1, 1, 0, 1], resamples=100, seed=3, name='x')))")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60,
                           env={"PYTHONHASHSEED": str(seed), "PATH": ""}).stdout for seed in (1, 2)}
    assert len(outs) == 1 and json.loads(outs.pop()) == bootstrap_mean_ci([0, 1, 1, 0, 1], resamples=100, seed=3,
                                                                          name="x")


def test_bootstrap_interval_by_hand():
    assert bootstrap_mean_ci([], resamples=10, seed=0, name="x") is None
    assert bootstrap_mean_ci([1.0, 1.0], resamples=0, seed=0, name="x") is None
    assert bootstrap_mean_ci([None, None], resamples=10, seed=0, name="x") is None
    lo, hi = bootstrap_mean_ci([0.0] * 50 + [1.0] * 50, resamples=2000, seed=0, name="x")
    # the normal approximation of the mean's 95% interval: 0.5 ± 1.96 · 0.05
    assert lo == pytest.approx(0.402, abs=0.03) and hi == pytest.approx(0.598, abs=0.03)
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5 and percentile([5.0], 0.975) == 5.0


def test_confusion_matrix_of_first_candidates():
    rows = [row("psoriasis", "1. eczema"), row("psoriasis", "1. melanoma"), row("melanoma", ""),
            row("melanoma", "1. banana\n2. melanoma")]
    confusion = metrics(rows)["confusion"]
    assert confusion["columns"][-1] == "none" and len(confusion["rows"]) == 9
    cell = {(r, c): confusion["matrix"][i][j] for i, r in enumerate(confusion["rows"])
            for j, c in enumerate(confusion["columns"])}
    assert cell[("inflammatory", "inflammatory")] == 1 and cell[("inflammatory", "malignant melanoma")] == 1
    assert cell[("malignant melanoma", "none")] == 2
    assert sum(map(sum, confusion["matrix"])) == 4


def test_caption_fields_over_the_rows_that_know_them():
    known_six = {"color": "red", "shape": "", "lesion_type": "plaque", "texture": "", "surface": "scaly", "other": ""}
    full = dict.fromkeys(CAPTION_FIELDS, "")
    full.update(color="brown", location="back")
    rows = [
        row("psoriasis", "1. psoriasis", caption_text="color: red\nlesion type: plaque\nsurface: smooth",
            caption_target=known_six),
        row("psoriasis", "1. psoriasis", caption_text="color: brown\nlocation: arm", caption_target=full),
        row("psoriasis", "1. psoriasis", caption_text=None, caption_target=full),   # not asked: not scored
        row("psoriasis", "1. psoriasis", caption_text="color: red", caption_target=None),
    ]
    caption = metrics(rows)["caption"]
    assert caption["n"] == 2
    assert caption["fields"]["color"] == {"value": 1.0, "n": 2}
    assert caption["fields"]["lesion_type"] == {"value": 0.5, "n": 2}   # 1 (first) and 0 (second: not stated)
    assert caption["fields"]["surface"] == {"value": 0.0, "n": 2}
    assert caption["fields"]["location"] == {"value": 0.0, "n": 1}      # only the full target knows it
    assert caption["fields"]["size"]["n"] == 1
    assert 0.0 <= caption["reward"] <= 1.0 and caption["reward"] > 0.0


def test_caption_section_is_null_without_targets():
    caption = metrics([row("psoriasis", "1. psoriasis")])["caption"]
    assert caption["n"] == 0 and caption["reward"] is None
    assert all(entry == {"value": None, "n": 0} for entry in caption["fields"].values())


def test_k_comes_from_the_rows_when_not_given():
    assert metrics([row("psoriasis", "1. psoriasis", k=3)])["k"] == 3
    assert metrics([row("psoriasis", "1. psoriasis", k=3), row("eczema", "x", k=4)])["k"] == 6
    assert metrics([row("psoriasis", "1. psoriasis", k=3)], k=2)["k"] == 2


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.pop("label"), "missing key 'label'"),
        (lambda r: r.pop("diagnosis_text"), "missing key 'diagnosis_text'"),
        (lambda r: r.update(label="banana"), "'label' 'banana' is not a Fitzpatrick17k label"),
        (lambda r: r.update(label=3), "is not a Fitzpatrick17k label"),
        (lambda r: r.update(skin_type="3"), "'skin_type' must be an int 1-6"),
        (lambda r: r.update(skin_type=True), "'skin_type' must be an int 1-6"),
        (lambda r: r.update(skin_type=7), "'skin_type' must be an int 1-6"),
        (lambda r: r.update(skin_type=3.0), "'skin_type' must be an int 1-6"),
        (lambda r: r.update(id=""), "'id' must be a non-empty string"),
        (lambda r: r.update(id=5), "'id' must be a non-empty string"),
        (lambda r: r.update(split=None), "'split' must be a string"),
        (lambda r: r.update(caption_target={"colour": "red"}), "'caption_target'"),
        (lambda r: r.update(caption_target="red"), "'caption_target'"),
        (lambda r: r.update(k=0), "'k' must be a positive int"),
    ],
)
def test_bad_rows_name_their_line(change, message):
    rows = [row("psoriasis", "1. psoriasis"), row("eczema", "1. eczema")]
    change(rows[1])
    with pytest.raises(PredictionError, match="predictions:2: ") as error:
        compute_metrics(rows, NO_CI)
    assert message in str(error.value)
    assert isinstance(error.value, ValueError)


def test_duplicate_ids_and_empty_sets_are_refused():
    with pytest.raises(PredictionError, match="duplicate id 'x' \\(first on line 1\\)"):
        check_rows([row("psoriasis", "", id="x"), row("eczema", "", id="x")])
    with pytest.raises(PredictionError, match="no predictions"):
        check_rows([])
    with pytest.raises(PredictionError, match="must be a JSON object"):
        check_rows([["not", "a", "row"]])


def test_load_predictions_names_file_and_line(tmp_path):
    path = tmp_path / "p.jsonl"
    good = json.dumps(row("psoriasis", "1. psoriasis"))
    path.write_bytes(("\ufeff" + good + "\n\n").encode() + b'{"id": "\xff"}\n' + b"{not json\n" + b"NaN\n"
                     + json.dumps(row("banana", "")).encode() + b"\n")
    with pytest.raises(PredictionError) as error:
        load_predictions(path)
    text = str(error.value)
    assert f"{path}:3: not UTF-8" in text and f"{path}:4: not valid JSON" in text and f"{path}:5: not valid" in text
    path.write_text(good + "\n" + json.dumps(row("banana", "")) + "\n", encoding="utf-8")
    with pytest.raises(PredictionError, match=f"{path}:2: 'label' 'banana'"):
        load_predictions(path)
    path.write_text("\ufeff" + good + "\n\n", encoding="utf-8")
    assert [r["label"] for r in load_predictions(path)] == ["psoriasis"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_predictions(tmp_path / "missing.jsonl")
    with pytest.raises(FileNotFoundError, match="is a directory"):
        load_predictions(tmp_path)


def test_settings_are_checked():
    for bad in ({"k": 0}, {"bootstrap": -1}, {"seed": -1}, {"confidence": 1.0}, {"k": True}):
        with pytest.raises(ValueError):
            EvalSettings(**bad)


def test_fractions_are_finite_and_in_range():
    rows = [row(label, answer, st) for label, answer, st in
            [("psoriasis", "1. psoriasis", 1), ("melanoma", "1. melanoma", 5), ("acne", 7, None)]]
    m = compute_metrics(rows, EvalSettings(bootstrap=100))

    def walk(value):
        if isinstance(value, dict):
            for item in value.values():
                yield from walk(item)
        elif isinstance(value, list):
            for item in value:
                yield from walk(item)
        elif isinstance(value, float):
            yield value

    assert all(math.isfinite(v) for v in walk(m))
    assert all(0.0 <= v <= 1.0 for level in m["topk"].values() for v in level)
    json.dumps(m, allow_nan=False)


def test_metrics_module_is_pure_python():
    code = ("import sys, skinflow.eval.metrics, skinflow.eval.report; "
            "print(sorted(m for m in ('torch', 'transformers', 'PIL', 'numpy', 'matplotlib', 'rich') "
            "if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"
