"""The Stage II (ranked diagnosis) reward: rank weights, synonym-level correctness, repeats, the K limit, group credit,
the shared matching core, and the matching accuracy on noisy answers (not timed: speed is in benchmarks/)."""

import math
import random

import pytest

from skinflow.formats import DEFAULT_K, format_diagnoses
from skinflow.rewards import (
    DIAGNOSIS_PARTS,
    LEVELS,
    DiagnosisRewardConfig,
    candidate_labels,
    match_candidate,
    match_ranks,
    score,
    score_diagnosis,
)
from skinflow.rewards.noisy import NOISE_KINDS, UNRELATED, noisy_candidate, noisy_diagnosis_answer, perturb
from skinflow.targets import DiagnosisTarget, TargetError
from skinflow.taxonomy import LABELS, canonical, match_label, nine_group, three_group

PSORIASIS = DiagnosisTarget("psoriasis")
MELANOMA = DiagnosisTarget("melanoma")


def answer(*candidates: str) -> str:
    return format_diagnoses(list(candidates))


def fillers(n: int, avoid: DiagnosisTarget, group: bool = True) -> list[str]:
    """``n`` labels that match ``avoid`` at no level (not even its 3-way group when ``group``)."""
    out, seen = [], {avoid.canonical}
    for label in LABELS:
        if canonical(label) in seen or group and three_group(label) == avoid.three_group:
            continue
        seen.add(canonical(label))
        out.append(label)
    return out[:n]


# --- rank weights ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 3, 6, 10])
def test_linear_weights_by_rank(k):
    target = DiagnosisTarget("psoriasis", k)
    other = fillers(k + 2, target)
    scores = []
    for rank in range(1, k + 3):
        candidates = [*other[: rank - 1], "psoriasis", *other[rank - 1 :]][: k + 2]
        scores.append(score_diagnosis(answer(*candidates), target).score)
    assert scores[0] == 1.0
    assert scores[: k] == pytest.approx([(k - r + 1) / k for r in range(1, k + 1)])
    assert all(a > b for a, b in zip(scores[:k], scores[1:k]))
    assert scores[k:] == [0.0, 0.0]  # beyond K


def test_reciprocal_and_custom_weights():
    other = fillers(5, PSORIASIS)
    third = answer(*other[:2], "psoriasis", *other[2:])
    assert score_diagnosis(third, PSORIASIS, DiagnosisRewardConfig("reciprocal")).score == pytest.approx(1 / 3)
    custom = DiagnosisRewardConfig([1.0, 0.5, 0.25])
    assert score_diagnosis(third, PSORIASIS, custom).score == 0.25
    fourth = answer(*other[:3], "psoriasis")
    assert score_diagnosis(fourth, PSORIASIS, custom).score == 0.0  # ranks beyond the given weights score 0
    assert DiagnosisRewardConfig().weight(None, 6) == 0.0 and DiagnosisRewardConfig().weight(7, 6) == 0.0


@pytest.mark.parametrize("weights, message", [
    ("harmonic", "one of"), ([], "non-empty"), ([0.9, 0.5], r"rank_weights\[0\] must be 1"),
    ([1.0, 1.0], "strictly decreasing"), ([1.0, 0.5, 0.6], "strictly decreasing"), ([1.0, 0.0], "> 0"),
    ([1.0, -0.5], "> 0"), ([1.0, float("nan")], "finite"), ([1.0, "0.5"], "finite number"), (3, "one of"),
    ([1.0, True], "finite number"),
])
def test_rank_weights_are_validated(weights, message):
    with pytest.raises(ValueError, match=message):
        DiagnosisRewardConfig(rank_weights=weights)


@pytest.mark.parametrize("setting, value", [("group9_credit", 1.5), ("group3_credit", -0.1),
                                            ("group9_credit", float("nan")), ("k", 0), ("k", True), ("k", 2.5)])
def test_other_settings_are_validated(setting, value):
    with pytest.raises(ValueError, match=setting):
        DiagnosisRewardConfig(**{setting: value})


# --- correctness after synonym merges -----------------------------------------------------------------------------


@pytest.mark.parametrize("target, candidate", [
    (MELANOMA, "malignant melanoma"), (MELANOMA, "Malignant Melanomas"), (MELANOMA, "melanoma, malignant"),
    (MELANOMA, "lentigo maligna"), (PSORIASIS, "pustular psoriasis"), (PSORIASIS, "PSORIASIS"),
    (PSORIASIS, "psoraisis"), (PSORIASIS, "possible psoriasis"), (PSORIASIS, "likely psoriasis (70%)"),
    (PSORIASIS, "psoriasis - 45%"), (PSORIASIS, "most likely psoriasis vulgaris"), (PSORIASIS, "Psoriasis, pustular"),
    (DiagnosisTarget("basal cell carcinoma"), "basal-cell carcinomas"), (DiagnosisTarget("basal cell carcinoma"), "BCC"),
    (DiagnosisTarget("basal cell carcinoma"), "carcinoma, basal cell"),
    (DiagnosisTarget("seborrheic keratosis"), "keratosis seborrheic"),
    (DiagnosisTarget("seborrheic keratosis"), "probable sebhorreic keratosis"),
    (DiagnosisTarget("pyogenic granuloma"), "granuloma, pyogenic"),
    (DiagnosisTarget("perioral dermatitis"), "dermatitis perioral"),
    (DiagnosisTarget("eczema"), "atopic dermatitis"), (DiagnosisTarget("urticaria"), "hives"),
])
def test_a_correct_candidate_is_the_same_label_after_synonym_merges(target, candidate):
    assert score_diagnosis(answer(candidate), target).score == 1.0, match_candidate(candidate)


def test_exact_and_synonym_levels_differ():
    ranks = match_ranks(answer("malignant melanoma"), MELANOMA)
    assert ranks == {"exact": None, "synonym": 1, "group9": 1, "group3": 1}
    ranks = match_ranks(answer("melanoma"), MELANOMA)
    assert ranks["exact"] == 1


def test_match_ranks_per_level():
    target = DiagnosisTarget("basal cell carcinoma")
    text = answer("eczema", "squamous cell carcinoma", "melanoma", "basal cell carcinoma morpheiform",
                  "basal cell carcinoma")
    # "basal cell carcinoma" repeats the diagnosis of rank 4 (a subtype merged into it): one candidate, and the
    # exact label is among those it names
    assert match_ranks(text, target) == {"exact": 4, "synonym": 4, "group9": 2, "group3": 2}
    assert match_ranks(text, target, k=3) == {"exact": None, "synonym": None, "group9": 2, "group3": 2}
    assert match_ranks(answer("basal cell carcinoma morpheiform"), target)["exact"] is None
    assert tuple(match_ranks(None, target)) == LEVELS and set(match_ranks(None, target).values()) == {None}
    # already-parsed candidates are accepted too
    assert match_ranks(["eczema", "Basal cell carcinomas"], target)["exact"] == 2
    assert candidate_labels(["psoriasis", "pustular psoriasis", "xyz", "xyz", 5]) == [
        ("psoriasis", "psoriasis"), ("xyz", None)]


def test_unrelated_text_matches_nothing_and_scores_zero():
    for text in UNRELATED:
        assert match_candidate(text) is None, text
    for label in ("psoriasis", "melanoma", "eczema", "acne", "scabies"):
        result = score_diagnosis(answer(*UNRELATED[:6]), DiagnosisTarget(label))
        assert result.score == 0.0 and result.parts["unmatched"] == result.parts["candidates"]


# --- repeats, the K limit, group credit -----------------------------------------------------------------------


def test_repeating_a_candidate_never_helps():
    wrong = fillers(6, PSORIASIS)
    plain = score_diagnosis(answer(wrong[0], "psoriasis"), PSORIASIS).score
    for repeated in (
        answer(wrong[0], wrong[0], "psoriasis"),
        answer(wrong[0], wrong[0].upper(), f"possible {wrong[0]}", "psoriasis"),
        answer(wrong[0], "psoriasis", "psoriasis", "pustular psoriasis", "Psoriasis (60%)"),
    ):
        assert score_diagnosis(repeated, PSORIASIS).score == plain
    # a truth repeated at every rank is still one candidate, at its first rank
    assert score_diagnosis(answer(*["psoriasis"] * 6), PSORIASIS).parts["candidates"] == 1.0
    # synonyms of a wrong label are one candidate: "melanoma" and "malignant melanoma" use one rank
    assert match_ranks(answer("melanoma", "malignant melanoma", "psoriasis"), PSORIASIS)["synonym"] == 2


def test_only_the_first_k_distinct_candidates_count():
    target = DiagnosisTarget("psoriasis", 3)
    wrong = fillers(5, target)
    assert score_diagnosis(answer(*wrong[:3], "psoriasis"), target).score == 0.0
    assert score_diagnosis(answer(*wrong[:2], "psoriasis"), target).score == pytest.approx(1 / 3)
    result = score_diagnosis(answer(*wrong[:5], "psoriasis"), target)
    assert result.parts["candidates"] == 3.0
    override = DiagnosisRewardConfig(k=6)
    assert score_diagnosis(answer(*wrong[:3], "psoriasis"), target, override).score == pytest.approx(3 / 6)


def test_group_credit_is_off_by_default_and_configurable():
    target = DiagnosisTarget("basal cell carcinoma")
    same_nine = next(label for label in LABELS if nine_group(label) == target.nine_group
                     and canonical(label) != target.canonical)
    same_three = next(label for label in LABELS if three_group(label) == target.three_group
                      and nine_group(label) != target.nine_group)
    for candidate in (same_nine, same_three):
        assert score_diagnosis(answer(candidate), target).score == 0.0
    credit = DiagnosisRewardConfig(group9_credit=0.5, group3_credit=0.25)
    assert score_diagnosis(answer(same_nine), target, credit).score == 0.5
    assert score_diagnosis(answer(same_three), target, credit).score == 0.25
    other = fillers(1, target)[0]
    second = score_diagnosis(answer(other, same_nine), target, credit).score
    assert second == pytest.approx(0.5 * 5 / 6)
    assert score_diagnosis(answer(same_nine, "basal cell carcinoma"), target, credit).score == pytest.approx(5 / 6)


# --- parts and ground truths -----------------------------------------------------------------------------------


def test_parts():
    result = score_diagnosis(answer("eczema", "xyz disease", "psoriasis"), PSORIASIS)
    parts = result.as_dict()
    assert set(parts) == set(DIAGNOSIS_PARTS)
    assert parts["rank"] == 3.0 and parts["hit"] == 1.0 and parts["top1"] == 0.0 and parts["exact"] == 1.0
    assert parts["candidates"] == 3.0 and parts["unmatched"] == 1.0 and parts["parsed"] == 1.0
    empty = score_diagnosis("", PSORIASIS).as_dict()
    assert empty["rank"] == 0.0 and empty["parsed"] == 0.0 and empty["score"] == 0.0
    assert all(type(value) is float and math.isfinite(value) for value in parts.values())


@pytest.mark.parametrize("truth, message", [
    ({"stage": "diagnosis", "label": "not a disease"}, "not a Fitzpatrick17k label"),
    ({"stage": "diagnosis", "label": "psoriasis", "k": 0}, "k must be an int >= 1"),
    ({"stage": "diagnosis", "label": "psoriasis", "canonical": "eczema"}, "canonical"),
    ({"stage": "diagnoses", "label": "psoriasis"}, "stage"),
    ('{"stage": "diagnosis", "label": ', "not valid JSON"),
    (42, "JSON string or object"), (None, "JSON string or object"),
])
def test_malformed_diagnosis_ground_truths_raise_value_errors_naming_them(truth, message):
    with pytest.raises(TargetError, match=message) as error:
        score("1. psoriasis", truth)
    assert str(error.value).startswith("ground truth")
    assert issubclass(TargetError, ValueError)


def test_a_ground_truth_of_the_other_stage_is_refused_when_a_stage_is_asked():
    with pytest.raises(TargetError, match="expected 'caption'"):
        score("1. psoriasis", PSORIASIS.to_json(), stage="caption")


# --- matching accuracy on noisy answers (an accuracy floor, not a timing) ---------------------------------------


def test_matching_accuracy_on_noisy_candidates():
    """Measured on this generator (seed 0, 5 000 candidates): 99.96 % with the rewards' matcher (taxonomy's
    ``match_label`` alone: 86 %). The floor leaves room for the rare typo that lands on another name."""
    rng = random.Random(0)
    total = correct = baseline = 0
    for _ in range(5000):
        label = rng.choice(LABELS)
        candidate = noisy_candidate(label, rng, rng.randint(1, 2))
        matched = candidate_labels(f"1. {candidate}")
        got = matched[0][1] if matched else None
        total += 1
        correct += got is not None and canonical(got) == canonical(label)
        plain = match_label(matched[0][0]) if matched else None
        baseline += plain is not None and canonical(plain) == canonical(label)
    assert correct / total >= 0.995
    assert correct >= baseline


@pytest.mark.parametrize("kind", [kind for kind in NOISE_KINDS if kind != "alias"])
def test_every_kind_of_noise_matches_for_every_label(kind):
    rng = random.Random(kind)
    misses = []
    for label in LABELS:
        for _ in range(3):
            candidate = perturb(label, kind, rng)
            got = match_candidate(candidate_labels(f"1. {candidate}")[0][0])
            if got is None or canonical(got) != canonical(label):
                misses.append((label, candidate, got))
    assert len(misses) <= 0.01 * 3 * len(LABELS), misses[:10]


def test_noisy_ranked_answers_score_their_rank():
    rng = random.Random(5)
    for case in range(300):
        label = rng.choice(LABELS)
        text, rank = noisy_diagnosis_answer(label, rng, case)
        got = score_diagnosis(text, DiagnosisTarget(label)).parts["rank"]
        # a noisy filler can name the truth's diagnosis earlier (by chance); it can never push the truth later
        assert got == rank or (rank == 0 and got > 0) or 0 < got < rank or got == 0 and rank == 0, (text, rank, got)
    assert DEFAULT_K == 6
