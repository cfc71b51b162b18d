"""Tests of skinflow.taxonomy: the 114 Fitzpatrick17k labels, groups, synonym merging and free-text matching."""

import csv
import io
from importlib import resources

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skinflow.taxonomy import (
    ALIASES,
    CANONICAL_LABELS,
    LABELS,
    MERGE_REASONS,
    NINE_GROUPS,
    THREE_GROUPS,
    canonical,
    match_label,
    nine_group,
    normalize,
    three_group,
)
from tests.skinflow.adversarial import FakeStr, HostileStr, Unprintable, time_limit


def _resource_rows(name: str) -> list[dict[str, str]]:
    text = resources.files("skinflow").joinpath("resources", name).read_text(encoding="utf-8")
    return list(csv.DictReader(io.StringIO(text)))


def test_labels_are_the_114_sorted_lower_case_fitzpatrick17k_labels():
    assert len(LABELS) == 114
    assert len(set(LABELS)) == 114
    assert list(LABELS) == sorted(LABELS)
    assert all(label == label.lower().strip() for label in LABELS)
    assert sum(int(row["count"]) for row in _resource_rows("fitzpatrick17k_taxonomy.csv")) == 16577


def test_group_vocabularies():
    assert len(NINE_GROUPS) == 9
    assert THREE_GROUPS == ("benign", "malignant", "non-neoplastic")
    assert {nine_group(label) for label in LABELS} == set(NINE_GROUPS)


@pytest.mark.parametrize(
    ("label", "nine", "three"),
    [
        ("melanoma", "malignant melanoma", "malignant"),
        ("basal cell carcinoma", "malignant epidermal", "malignant"),
        ("mycosis fungoides", "malignant cutaneous lymphoma", "malignant"),
        ("kaposi sarcoma", "malignant dermal", "malignant"),
        ("seborrheic keratosis", "benign epidermal", "benign"),
        ("halo nevus", "benign melanocyte", "benign"),
        ("pyogenic granuloma", "benign dermal", "benign"),
        ("neurofibromatosis", "genodermatoses", "non-neoplastic"),
        ("psoriasis", "inflammatory", "non-neoplastic"),
    ],
)
def test_known_groups(label, nine, three):
    assert nine_group(label) == nine
    assert three_group(label) == three


def test_three_group_follows_nine_group():
    for label in LABELS:
        nine = nine_group(label)
        expected = nine.split()[0] if nine.startswith(("benign", "malignant")) else "non-neoplastic"
        assert three_group(label) == expected, label


def test_group_lookups_accept_case_and_spacing_variants_of_a_label():
    assert nine_group("  Basal  Cell Carcinoma ") == "malignant epidermal"
    assert three_group("BEHCETS DISEASE") == "non-neoplastic"
    assert canonical("Malignant Melanoma") == "melanoma"


@pytest.mark.parametrize("function", [nine_group, three_group, canonical])
def test_group_lookups_reject_non_labels_naming_the_argument(function):
    with pytest.raises(ValueError, match="label 'tinea corporis' is not one of the 114"):
        function("tinea corporis")
    with pytest.raises(TypeError, match="label must be a str"):
        function(None)


@pytest.mark.parametrize(
    ("merged", "into"),
    [
        ("malignant melanoma", "melanoma"),
        ("superficial spreading melanoma ssm", "melanoma"),
        ("lentigo maligna", "melanoma"),
        ("granuloma pyogenic", "pyogenic granuloma"),
        ("acne vulgaris", "acne"),
        ("neurodermatitis", "lichen simplex"),
        ("porokeratosis actinic", "disseminated actinic porokeratosis"),
        ("basal cell carcinoma morpheiform", "basal cell carcinoma"),
        ("solid cystic basal cell carcinoma", "basal cell carcinoma"),
        ("pustular psoriasis", "psoriasis"),
        ("dyshidrotic eczema", "eczema"),
        ("lupus subacute", "lupus erythematosus"),
    ],
)
def test_overlapping_labels_are_merged(merged, into):
    assert canonical(merged) == into
    assert canonical(into) == into
    assert merged in MERGE_REASONS


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("seborrheic dermatitis", "seborrheic keratosis"),
        ("urticaria", "urticaria pigmentosa"),
        ("erythema multiforme", "stevens johnson syndrome"),
        ("lichen planus", "lichen simplex"),
        ("actinic keratosis", "porokeratosis actinic"),
        ("drug eruption", "fixed eruptions"),
        ("rosacea", "rhinophyma"),
        ("porokeratosis of mibelli", "disseminated actinic porokeratosis"),
        ("nevocytic nevus", "congenital nevus"),
    ],
)
def test_distinct_diseases_stay_apart(first, second):
    assert canonical(first) != canonical(second)


def test_merges_are_consistent():
    assert len(CANONICAL_LABELS) == len(LABELS) - len(MERGE_REASONS)
    for label in LABELS:
        representative = canonical(label)
        assert canonical(representative) == representative
        assert nine_group(representative) == nine_group(label), label
        assert three_group(representative) == three_group(label), label
    assert all(reason.strip() for reason in MERGE_REASONS.values())


def test_aliases_point_at_labels_and_never_shadow_another_label():
    for alias, label in ALIASES.items():
        assert label in LABELS, alias
        assert match_label(alias) == label, alias
    for label in LABELS:
        assert match_label(label) == label


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Behçet's  Disease", "behcets disease"),
        ("Granuloma, pyogenic!", "granuloma pyogenic"),
        ("  ÉCZÉMA\n", "eczema"),
        ("---", ""),
    ],
)
def test_normalize(text, expected):
    assert normalize(text) == expected


def test_normalize_rejects_non_strings():
    with pytest.raises(TypeError, match="text must be a str"):
        normalize(3)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Psoriasis", "psoriasis"),
        ("MELANOMAS", "melanoma"),
        ("Granuloma, Pyogenic", "granuloma pyogenic"),
        ("Behçet's disease", "behcets disease"),
        ("xanthoma", "xanthomas"),
        ("telangiectasia", "telangiectases"),
        ("neutrophilic dermatosis", "neutrophilic dermatoses"),
        ("naevi", "nevocytic nevus"),
        ("milium", "milia"),
        ("seborrhoeic keratoses", "seborrheic keratosis"),
        ("psoraisis", "psoriasis"),
        ("basal cel carcinoma", "basal cell carcinoma"),
        ("lichen simplex chronicus", "lichen simplex"),
        ("hives", "urticaria"),
        ("BCC", "basal cell carcinoma"),
        ("morphea", "scleroderma"),
        ("erythema annulare centrifugum", "erythema annulare centrifigum"),
        ("probable pustular psoriasis of the palms", "pustular psoriasis"),
        ("most likely tinea, or psoriasis", "psoriasis"),
    ],
)
def test_match_label(text, expected):
    assert match_label(text) == expected


@pytest.mark.parametrize("text", ["", "   ", "!!!", "acme", "tinea corporis", "the skin", "lorem ipsum dolor"])
def test_match_label_gives_none_for_no_diagnosis(text):
    assert match_label(text) is None


@pytest.mark.parametrize("value", [None, 3, b"psoriasis", ["psoriasis"]])
def test_match_label_gives_none_for_non_strings(value):
    assert match_label(value) is None


def test_match_label_gives_none_when_two_diagnoses_are_equally_close():
    # "keratitis" is two edits from both "keratosis" and "dermatitis".
    assert match_label("seborrheic keratitis") is None
    assert match_label("seborrheic keratosi") == "seborrheic keratosis"


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_match_label_never_raises(text):
    result = match_label(text)
    assert result is None or result in LABELS


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from([label for label in LABELS if len(label) > 4]),
    st.integers(min_value=0),
    st.sampled_from("abcdefghijklmnopqrstuvwxyz"),
    st.sampled_from(["substitute", "delete", "insert", "swap"]),
)
def test_one_typo_in_a_label_still_matches_it(label, position, char, edit):
    index = position % len(label)
    typo = {
        "substitute": label[:index] + char + label[index + 1 :],
        "delete": label[:index] + label[index + 1 :],
        "insert": label[:index] + char + label[index:],
        "swap": label[:index] + label[index + 1 : index + 2] + label[index : index + 1] + label[index + 2 :],
    }[edit]
    matched = match_label(typo)
    assert matched is not None and canonical(matched) == canonical(label), (typo, matched)


# --- Reliability: any value, invisible characters, long inputs (issue 12) ---------------------------------------


@pytest.mark.parametrize(
    "value",
    [2.5, True, bytearray(b"psoriasis"), {"psoriasis": 1}, Unprintable(), FakeStr(), object()],
    ids=lambda value: type(value).__name__,
)
def test_match_label_gives_none_for_any_other_value(value):
    assert match_label(value) is None


def test_a_str_subclass_is_read_as_its_characters_without_calling_its_methods():
    assert match_label(HostileStr("Psoriasis")) == "psoriasis"
    assert match_label(HostileStr("x" * 300 + " psoriasis")) == "psoriasis"  # too long for the cache
    assert normalize(HostileStr("Behçet's Disease")) == "behcets disease"
    assert canonical(HostileStr("Malignant Melanoma")) == "melanoma"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("pso\u200briasis", "psoriasis"),  # zero-width space
        ("mela\u200bno\xadma", "melanoma"),  # zero-width space, soft hyphen
        ("\u202epso\u200bria\u200bsis\u202c", "psoriasis"),  # bidi override and pop
        ("ec\x00ze\x1bma", "eczema"),  # NUL, ESC
        ("\x1b[1mbasal cell\x1b[0m carcinoma", "basal cell carcinoma"),  # terminal escape sequences
        ("\ufeffsca\u2066bies\u2069", "scabies"),  # BOM, bidi isolate
        ("ps\ud800oria\udfffsis", "psoriasis"),  # lone surrogates
        ("li\u200dchen pla\u200cnus", "lichen planus"),  # zero-width joiner / non-joiner
    ],
)
def test_invisible_characters_do_not_defeat_matching(text, expected):
    assert match_label(text) == expected
    assert normalize(text) == normalize(expected)


def test_whitespace_controls_still_separate_words():
    assert normalize("basal\tcell\ncarcinoma\x1c\u2028x") == "basal cell carcinoma x"


def test_match_label_of_long_text_reads_the_first_words_only():
    assert match_label("psoriasis " + "x" * 1_000_000) == "psoriasis"
    assert match_label("x " * 40 + "psoriasis") is None  # the 41st word is not read
    assert match_label("x" * 5_000 + " psoriasis") is None  # beyond the characters read


@pytest.mark.parametrize(
    "text",
    ["\ufdfa" * 1_000_000, "psoriasis " * 100_000, "a" * 1_000_000, "\u200b" * 1_000_000, " ".join(LABELS) * 600],
    ids=["nfkd-expands-18x", "repeated-label", "one-word", "zero-width", "all-labels"],
)
def test_megabyte_texts_are_matched_and_normalised_in_bounded_time(text):
    with time_limit(20):
        result = match_label(text)
        normalized = normalize(text)
    assert result is None or result in LABELS
    assert isinstance(normalized, str)


def test_typo_matching_is_the_optimal_string_alignment_distance():
    # One swap of adjacent letters is one edit (not two): a 6-9 character name tolerates it.
    assert match_label("psoriasi") == "psoriasis"
    assert match_label("psorisais") == "psoriasis"
    assert match_label("psroiasis") == "psoriasis"
    assert match_label("eczmea") == "eczema"
    assert match_label("eczmae") is None  # two edits for a 6-character name
    assert match_label("scabeis") == "scabies"
