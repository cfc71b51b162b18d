"""Tests of skinflow.formats: the caption schema and the ranked-diagnosis format, their formatters and parsers."""

import functools
import json
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skinflow.formats import (
    CAPTION_FIELDS,
    CAPTION_PROMPT,
    DEFAULT_K,
    DIAGNOSIS_PROMPT,
    FIELD_VALUES,
    MAX_TEXT_CHARS,
    SKINCON_CONCEPTS,
    diagnosis_prompt,
    format_caption,
    format_diagnoses,
    normalize_value,
    parse_caption,
    parse_diagnoses,
    split_values,
)
from skinflow.taxonomy import LABELS, canonical, match_label
from tests.skinflow.adversarial import FakeStr, HostileStr, Unprintable, time_limit

# The 48 concept columns of SkinCon's annotations_fitzpatrick17k.csv, in file order.
SKINCON_COLUMNS = (
    "Vesicle", "Papule", "Macule", "Plaque", "Abscess", "Pustule", "Bulla", "Patch", "Nodule", "Ulcer", "Crust",
    "Erosion", "Excoriation", "Atrophy", "Exudate", "Purpura/Petechiae", "Fissure", "Induration", "Xerosis",
    "Telangiectasia", "Scale", "Scar", "Friable", "Sclerosis", "Pedunculated", "Exophytic/Fungating",
    "Warty/Papillomatous", "Dome-shaped", "Flat topped", "Brown(Hyperpigmentation)", "Translucent",
    "White(Hypopigmentation)", "Purple", "Yellow", "Black", "Erythema", "Comedo", "Lichenification", "Blue",
    "Umbilicated", "Poikiloderma", "Salmon", "Wheal", "Acuminate", "Burrow", "Gray", "Pigmented", "Cyst",
)  # fmt: skip

EXAMPLE_CAPTION = {
    "color": ["red", "brown"],
    "location": "forearm",
    "lesion_type": "plaque",
    "surface": "scaly",
    "border": "well-defined",
}
EXAMPLE_TEXT = (
    "color: red, brown\nlocation: forearm\nshape:\nlesion type: plaque\nnumber:\nsize:\ntexture:\n"
    "border: well-defined\nsurface: scaly\ndistribution:\nsurrounding:\nother:"
)


def _expected(**fields: str) -> dict[str, str]:
    return dict.fromkeys(CAPTION_FIELDS, "") | fields


def test_caption_fields_are_the_design_schema():
    assert CAPTION_FIELDS == (
        "color", "location", "shape", "lesion_type", "number", "size", "texture", "border", "surface",
        "distribution", "surrounding", "other",
    )  # fmt: skip


def test_field_values_form_a_clean_vocabulary_for_every_field():
    assert tuple(FIELD_VALUES) == CAPTION_FIELDS
    for field, values in FIELD_VALUES.items():
        assert values, field
        assert len(set(values)) == len(values), field
        for value in values:
            assert normalize_value(value) == value, (field, value)
            assert split_values(value) == [value], (field, value)
            assert parse_caption(format_caption({field: value}))[field] == value


def test_skincon_concepts_cover_all_48_columns_with_vocabulary_values():
    assert tuple(SKINCON_CONCEPTS) == SKINCON_COLUMNS
    for concept, (field, value) in SKINCON_CONCEPTS.items():
        assert value in FIELD_VALUES[field], concept


def test_format_caption_writes_twelve_lines_in_schema_order():
    assert format_caption(EXAMPLE_CAPTION) == EXAMPLE_TEXT


def test_format_caption_normalises_values():
    text = format_caption({"color": ["  Red ", "", "N/A"], "location": "Left\nForearm.", "other": "none"})
    assert text.splitlines()[:2] == ["color: red", "location: left forearm"]
    assert text.splitlines()[-1] == "other:"


def test_format_caption_rejects_bad_input_naming_it():
    with pytest.raises(ValueError, match="unknown fields \\['colour'\\]"):
        format_caption({"colour": "red"})
    with pytest.raises(TypeError, match="caption\\['size'\\] must be a str or a sequence of str"):
        format_caption({"size": 3})
    with pytest.raises(TypeError, match="caption must be a mapping"):
        format_caption(["color", "red"])


def test_parse_caption_reads_the_formatted_layout():
    assert parse_caption(EXAMPLE_TEXT) == _expected(
        color="red, brown", location="forearm", lesion_type="plaque", border="well-defined", surface="scaly"
    )


@pytest.mark.parametrize(
    ("text", "fields"),
    [
        ("COLOR: Red\nLesion Type: PAPULE", {"color": "red", "lesion_type": "papule"}),
        ("**Colour:** red\n- **Site**: scalp\n* lesion-type = nodule", {"color": "red", "location": "scalp",
                                                                         "lesion_type": "nodule"}),
        ("1. color: red\n2) shape: oval", {"color": "red", "shape": "oval"}),
        ("color: red; shape: round | border: ill-defined", {"color": "red", "shape": "round", "border": "ill-defined"}),
        ("color: red, brown, shape: round", {"color": "red, brown", "shape": "round"}),
        ('{"color": ["red", "pink"], "lesion_type": "plaque", "foo": 1, "size": null}',
         {"color": "red, pink", "lesion_type": "plaque"}),
        ('Here it is:\n```json\n{\n  "Color": "red",\n  "Lesion type": "papule"\n}\n```',
         {"color": "red", "lesion_type": "papule"}),
        ('{"color": "red", "shape": ', {"color": "red"}),
        ("color: red\ncolor: blue", {"color": "red"}),
        ("color: red\nmood: happy\nnumber: single", {"color": "red", "number": "single"}),
        ("color: red\nlocation: fore", {"color": "red", "location": "fore"}),
        ("color: red\nloca", {"color": "red"}),
        ("color:\nlocation: arm", {"location": "arm"}),
        ("color: none\nsize: N/A\nborder: -", {}),
        ("<think>color: blue</think>\ncolor: red", {"color": "red"}),
        ("<answer>\ncolor: red\n</answer>", {"color": "red"}),
        ("<think>color: blue", {}),
        ("ＣＯＬＯＲ：ｒｅｄ", {"color": "red"}),
        ("color: café-au-lait\nlocation: ärm", {"color": "café-au-lait", "location": "ärm"}),
        ("the color is red and it sits on the arm", {}),
        ("margin: rolled\nsurrounding skin: erythema", {"border": "rolled", "surrounding": "erythema"}),
    ],
)
def test_parse_caption_tolerates_variants(text, fields):
    assert parse_caption(text) == _expected(**fields)


def test_parse_caption_of_the_prompt_template_is_empty():
    assert parse_caption(CAPTION_PROMPT) == _expected()


@pytest.mark.parametrize("value", [None, 3, b"color: red", {"color": "red"}])
def test_parse_caption_of_non_text_is_empty(value):
    assert parse_caption(value) == _expected()


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_parse_caption_never_raises_and_returns_every_field(text):
    caption = parse_caption(text)
    assert tuple(caption) == CAPTION_FIELDS
    assert all(isinstance(value, str) and "\n" not in value for value in caption.values())


_vocabulary_term = st.one_of(
    st.sampled_from(sorted({value for values in FIELD_VALUES.values() for value in values})),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz- éü", min_size=1, max_size=20),
)
_caption = st.dictionaries(
    st.sampled_from(CAPTION_FIELDS),
    st.one_of(_vocabulary_term, st.lists(_vocabulary_term, max_size=4)),
)


@settings(max_examples=300, deadline=None)
@given(_caption)
def test_parse_caption_round_trips_formatted_captions(caption):
    expected = {}
    for field in CAPTION_FIELDS:
        value = caption.get(field, "")
        items = [value] if isinstance(value, str) else value
        expected[field] = ", ".join(term for term in map(normalize_value, items) if term)
    assert parse_caption(format_caption(caption)) == expected


@settings(max_examples=100, deadline=None)
@given(_caption)
def test_parse_caption_reads_json_of_a_caption(caption):
    assert parse_caption(json.dumps(caption)) == parse_caption(format_caption(caption))


@pytest.mark.parametrize(
    ("value", "terms"),
    [
        ("red, brown and tan", ["red", "brown", "tan"]),
        ("Red / Pink; red", ["red", "pink"]),
        ("", []),
        ("none", []),
        (None, []),
    ],
)
def test_split_values(value, terms):
    assert split_values(value) == terms


def test_prompts():
    for field in CAPTION_FIELDS:
        assert f"\n{field.replace('_', ' ')}:" in CAPTION_PROMPT
    assert DIAGNOSIS_PROMPT == diagnosis_prompt(DEFAULT_K)
    assert f"the {DEFAULT_K} most likely" in DIAGNOSIS_PROMPT
    assert "the 3 most likely" in diagnosis_prompt(3)
    with pytest.raises(ValueError, match="k must be a positive int"):
        diagnosis_prompt(0)


def test_format_diagnoses_writes_a_numbered_list():
    assert format_diagnoses(["Psoriasis", "eczema"]) == "1. psoriasis\n2. eczema"
    assert format_diagnoses([]) == ""


def test_format_diagnoses_rejects_bad_input_naming_it():
    with pytest.raises(TypeError, match="labels must be a sequence of str"):
        format_diagnoses("psoriasis")
    with pytest.raises(TypeError, match="labels\\[1\\] must be a str"):
        format_diagnoses(["psoriasis", 3])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1. psoriasis\n2. eczema\n3. lichen planus", ["psoriasis", "eczema", "lichen planus"]),
        ("1) Psoriasis\n2) ECZEMA", ["psoriasis", "eczema"]),
        ("(1) scabies\n(2) tinea", ["scabies", "tinea"]),
        ("#1 scabies\n#2 tinea", ["scabies", "tinea"]),
        ("Top-1: acne\nTop-2: rosacea", ["acne", "rosacea"]),
        ("- melanoma\n* nevus\n• seborrheic keratosis", ["melanoma", "nevus", "seborrheic keratosis"]),
        ("1. **Melanoma** - most likely\n2. nevus (70%)\n3. lentigo: flat", ["melanoma", "nevus", "lentigo"]),
        ("1. psoriasis 2. eczema 3. tinea", ["psoriasis", "eczema", "tinea"]),
        ("psoriasis, eczema; tinea", ["psoriasis", "eczema", "tinea"]),
        ("psoriasis\neczema", ["psoriasis", "eczema"]),
        ("Possible diagnoses:\n1. psoriasis\n2. eczema\nLet me know if you need more.", ["psoriasis", "eczema"]),
        ("Diagnosis: psoriasis", ["psoriasis"]),
        ("1. Diagnosis: psoriasis\n2. Dx: eczema", ["psoriasis", "eczema"]),
        ("1. psoriasis with 80% confidence\n2. eczema 20%", ["psoriasis", "eczema"]),
        ("<think>maybe 1. scabies</think>\n1. psoriasis", ["psoriasis"]),
        ("<answer>1. psoriasis\n2. eczema</answer>", ["psoriasis", "eczema"]),
        ("1. psoriasis\n2. psoriasis\n3. Psoriasis.\n4. eczema", ["psoriasis", "eczema"]),
        ("1. melanoma\n2. malignant melanoma\n3. granuloma pyogenic\n4. pyogenic granuloma",
         ["melanoma", "granuloma pyogenic"]),
        ("1. unknown rash\n2. psoriasis", ["unknown rash", "psoriasis"]),
        ("1. psoriasis\n2.\n3. eczema", ["psoriasis", "eczema"]),
        ("1. psoria", ["psoria"]),
        ("１． ｐｓｏｒｉａｓｉｓ", ["psoriasis"]),
        ("", []),
        ("\n \n", []),
    ],
)
def test_parse_diagnoses_tolerates_variants(text, expected):
    assert parse_diagnoses(text) == expected


def test_parse_diagnoses_stops_at_k_after_deduplication():
    text = "1. psoriasis\n2. psoriasis\n3. eczema\n4. tinea"
    assert parse_diagnoses(text, k=2) == ["psoriasis", "eczema"]
    assert parse_diagnoses(text, k=0) == []
    assert parse_diagnoses(text, k=10) == ["psoriasis", "eczema", "tinea"]


def test_parse_diagnoses_rejects_a_bad_k_naming_it():
    with pytest.raises(ValueError, match="k must be None or an int >= 0"):
        parse_diagnoses("1. psoriasis", k=-1)


@pytest.mark.parametrize("value", [None, 3, b"1. psoriasis", ["psoriasis"]])
def test_parse_diagnoses_of_non_text_is_empty(value):
    assert parse_diagnoses(value) == []


@settings(max_examples=300, deadline=None)
@given(st.text(), st.one_of(st.none(), st.integers(min_value=0, max_value=8)))
def test_parse_diagnoses_never_raises(text, k):
    ranked = parse_diagnoses(text, k)
    assert all(isinstance(entry, str) and entry and "\n" not in entry for entry in ranked)
    assert len(ranked) == len(set(ranked))
    assert k is None or len(ranked) <= k


def _deduplicated(entries: list[str]) -> list[str]:
    """Entries without later repeats of the same diagnosis (same canonical label, or same text when unmatched)."""
    kept, seen = [], set()
    for entry in entries:
        label = match_label(entry)
        identity = canonical(label) if label is not None else entry
        if entry and identity not in seen:
            seen.add(identity)
            kept.append(entry)
    return kept


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(LABELS), max_size=8))
def test_parse_diagnoses_round_trips_formatted_labels(labels):
    parsed = parse_diagnoses(format_diagnoses(labels))
    assert parsed == _deduplicated(labels)
    assert [match_label(entry) for entry in parsed] == parsed


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet="abcdefghijklmnopqrstuvwxyz 'éü", min_size=1, max_size=25), max_size=8))
def test_parse_diagnoses_round_trips_free_text_entries(entries):
    cleaned = [normalize_value(entry) for entry in entries]
    assert parse_diagnoses(format_diagnoses(entries)) == _deduplicated(cleaned)


# --- Reliability: any value, deep nesting, invisible characters, megabytes (issue 12) ---------------------------


_NON_TEXT = [None, 3, 2.5, True, b"color: red", bytearray(b"1. psoriasis"), {"color": "red"}, ["1. psoriasis"],
             ("color", "red"), Unprintable(), FakeStr(), object(), int, Ellipsis]  # fmt: skip


@pytest.mark.parametrize("value", _NON_TEXT, ids=lambda value: type(value).__name__)
def test_every_text_function_treats_non_text_as_unparseable(value):
    assert parse_caption(value) == _expected()
    assert parse_diagnoses(value) == []
    assert parse_diagnoses(value, k=3) == []
    assert normalize_value(value) == ""
    assert split_values(value) == []


def test_a_str_subclass_is_read_as_its_characters_without_calling_its_methods():
    assert parse_caption(HostileStr("color: red\nsite: arm")) == _expected(color="red", location="arm")
    assert parse_caption(HostileStr('{"color": "red"}')) == _expected(color="red")
    assert parse_diagnoses(HostileStr("1. psoriasis\n2. eczema"), k=2) == ["psoriasis", "eczema"]
    assert normalize_value(HostileStr(" Red. ")) == "red"
    assert split_values(HostileStr("red and brown")) == ["red", "brown"]


_DEEP_JSON = [
    '{"color":' * 1000,
    "[" * 5000,
    "{" * 5000,
    '{"color": ' + "[" * 5000,
    '{"a": ' * 3000 + "1" + "}" * 3000,
    '{"color": "red", "shape": ' + "[" * 5000 + "]" * 5000 + "}",
    '```json\n{"color": [' + "{" * 2000,
]


@pytest.mark.parametrize("text", _DEEP_JSON, ids=lambda text: repr(text[:12]))
def test_parse_caption_survives_deeply_nested_json(text):
    caption = parse_caption(text)
    assert tuple(caption) == CAPTION_FIELDS
    assert all(isinstance(value, str) for value in caption.values())
    assert isinstance(parse_diagnoses(text), list)


def test_deeply_nested_json_still_gives_its_flat_fields():
    assert parse_caption('{"color": "red", "shape": ' + "[" * 5000 + "]" * 5000 + "}")["color"] == "red"
    # A nested container inside a value is ignored, however deep (its str() is never taken).
    for depth in (2, 900, 5000):
        text = '{"color": "red", "surface": [' + "[" * depth + "]" * depth + "]}"
        assert parse_caption(text) == _expected(color="red"), depth
    assert parse_caption('{"color": {"hue": "red"}, "size": ["small", {"x": 1}, 2]}') == _expected(size="small, 2")


@pytest.mark.parametrize(
    "text",
    [
        "co\u200blor: red",  # zero-width space inside the field name
        "\u202ecolor: red\u202c",  # right-to-left override ... pop
        "color: r\x00ed",  # NUL inside the value
        "\x1b[1;31mcolor\x1b[0m: red",  # terminal colour codes
        "\ufeffcolor: red",  # byte order mark
        "col\xador: r\u2066ed\u2069",  # soft hyphen, bidi isolate
        "\u200fcolor\u200e: \ud800red\udfff",  # bidi marks, lone surrogates
        "color:\x7f red\x07\x08",  # DEL, BEL, backspace
        "c\u2060o\u200dl\u200co\ufeffr: red",  # word joiner, zero-width joiner / non-joiner
    ],
)
def test_parse_caption_ignores_control_and_bidi_characters(text):
    assert parse_caption(text) == _expected(color="red")


@pytest.mark.parametrize("line_break", ["\r\n", "\r", "\x0b", "\x0c", "\x1c", "\x1e", "\x85", "\u2028", "\u2029"])
def test_every_line_break_separates_caption_lines(line_break):
    assert parse_caption(f"color: red{line_break}shape: round") == _expected(color="red", shape="round")
    assert parse_diagnoses(f"1. psoriasis{line_break}2. eczema") == ["psoriasis", "eczema"]


def test_parse_diagnoses_ignores_control_and_bidi_characters():
    text = "1. pso\u200briasis\n2. ec\x00zema\u202e\n3. \ufeff\x1b[32mtinea\x1b[0m\n4. \ud800"
    assert parse_diagnoses(text) == ["psoriasis", "eczema", "tinea"]
    # The invisible characters no longer make a repeat look like a new diagnosis.
    assert parse_diagnoses("1. psoriasis\n2. psori\u200basis\n3. eczema", k=2) == ["psoriasis", "eczema"]


def test_value_helpers_remove_control_and_bidi_characters():
    assert normalize_value("r\u200be\x00d\u202e") == "red"
    assert normalize_value("\u202enone\u202c") == ""
    assert split_values("red,\u200b brown an\u200bd t\x00an") == ["red", "brown", "tan"]
    assert split_values("red\uff0cbrown\uff1b tan") == ["red", "brown", "tan"]  # full-width comma and semicolon


@pytest.mark.parametrize("value", ["\u00df\u0301", "a\u00df\u0301 .'red'.", "*'.none.'*", "\u1e9e\u0308x"])
def test_normalize_value_is_idempotent(value):
    once = normalize_value(value)
    assert normalize_value(once) == once
    assert parse_caption(format_caption({"other": value}))["other"] == once


@functools.cache
def _megabyte_answers() -> dict[str, str]:
    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefghijklmnop") for _ in range(rng.randrange(8, 14))) for _ in range(80_000)]
    return {
        "distinct unknown entries": ", ".join(words),
        "numbered distinct entries": "".join(f"{i % 99 + 1}. {word}\n" for i, word in enumerate(words)),
        "nested json": '{"color":' * 120_000,
        "one long value": "color: " + "red " * 250_000,
        "NFKC expands 18x": "\ufdfa" * 1_000_000,
        "zero-width spaces": "\u200b" * 1_000_000,
        "spaces": " " * 1_000_000,
        "field names": "\ncolor: " * 125_000,
    }


@pytest.mark.parametrize(
    "name",
    ["distinct unknown entries", "numbered distinct entries", "nested json", "one long value", "NFKC expands 18x",
     "zero-width spaces", "spaces", "field names"],
)  # fmt: skip
def test_megabyte_answers_parse_in_bounded_time(name):
    text = _megabyte_answers()[name]
    assert len(text) >= 900_000
    with time_limit(20):  # linear and capped: well under a second; the hand-written edit distance took a minute
        caption = parse_caption(text)
        ranked = parse_diagnoses(text)
        ranked_k = parse_diagnoses(text, k=DEFAULT_K)
        value = normalize_value(text)
        terms = split_values(text)
    assert tuple(caption) == CAPTION_FIELDS and all(isinstance(item, str) for item in caption.values())
    assert isinstance(ranked, list) and all(isinstance(entry, str) for entry in ranked)
    assert ranked_k == ranked[:DEFAULT_K]
    assert isinstance(value, str) and len(value) <= MAX_TEXT_CHARS
    assert isinstance(terms, list) and all(isinstance(term, str) for term in terms)


def test_only_the_first_max_text_chars_are_read():
    caption_tail, diagnosis_tail = "\nshape: round", "\n2. eczema"
    for head, tail, parse, expected in [
        ("color: red\n", caption_tail, lambda text: parse_caption(text)["shape"], "round"),
        ("1. psoriasis\n", diagnosis_tail, parse_diagnoses, ["psoriasis", "eczema"]),
    ]:
        fits = head + "x" * (MAX_TEXT_CHARS - len(head) - len(tail)) + tail
        assert len(fits) == MAX_TEXT_CHARS
        assert parse(fits) == expected
        assert parse(head + "x" + fits[len(head) :]) != expected  # one character more: the tail is cut


@pytest.mark.parametrize("k", [np.int64(2), np.int32(2), np.uint8(2)])
def test_numpy_integers_are_accepted_as_k(k):
    assert parse_diagnoses("1. psoriasis\n2. eczema\n3. tinea", k=k) == ["psoriasis", "eczema"]
    assert "the 2 most likely" in diagnosis_prompt(k)


@pytest.mark.parametrize("k", [True, 1.0, "2", -1])
def test_parse_diagnoses_rejects_a_k_that_is_not_a_count(k):
    with pytest.raises(ValueError, match="k must be None or an int >= 0"):
        parse_diagnoses("1. psoriasis", k=k)


# --- readers for the rewards: read_caption (stated fields and layout) and parse_diagnosis_matches ---------------


def test_read_caption_tells_stated_fields_from_missing_ones():
    from skinflow.formats import read_caption

    reading = read_caption("color: Red\nshape:\nlesion type: papule")
    assert reading.stated == {"color": "red", "shape": "", "lesion_type": "papule"}
    assert read_caption(None) == ({}, 0, 0) and read_caption("") == ({}, 0, 0)
    assert read_caption('{"colour": "red", "border": ""}').stated == {"color": "red", "border": ""}


@settings(max_examples=80, deadline=None)
@given(st.text(max_size=300) | st.lists(st.sampled_from([
    "color: red", "shape:", "Lesion-Type = papule", "**border:** irregular", "1. psoriasis", "size: small; number: few",
    "<think>color: blue</think>", "other", ""]), max_size=12).map("\n".join))
def test_read_caption_reads_the_values_parse_caption_reads(text):
    from skinflow.formats import read_caption

    reading = read_caption(text)
    assert dict.fromkeys(CAPTION_FIELDS, "") | reading.stated == parse_caption(text)
    assert 0 <= reading.format_lines <= min(reading.lines, len(CAPTION_FIELDS))


def test_read_caption_counts_the_lines_of_the_exact_layout():
    from skinflow.formats import read_caption

    exact = format_caption(EXAMPLE_CAPTION)
    assert read_caption(exact)[1:] == (12, 12)
    lines = exact.split("\n")
    assert read_caption("Caption:\n" + exact)[1:] == (12, 13)
    assert read_caption("\n".join([lines[1], lines[0], *lines[2:]]))[1:] == (11, 12)  # out of order
    assert read_caption("\n".join([*lines, lines[0]]))[1:] == (12, 13)  # repeated
    assert read_caption("\n".join(f"- {line}" for line in lines))[1:] == (0, 12)  # decorated
    assert read_caption("color: red; shape: round")[1:] == (0, 1)  # two fields on one line
    assert read_caption("LESION_TYPE: papule\n\n   \nlocation: arm")[1:] == (1, 2)
    assert read_caption("<think>\ncolor: red\n</think>\n" + exact)[1:] == (12, 12)
    assert read_caption("color\u0131: red")[1:] == (0, 1)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(LABELS), st.sampled_from(["xyz", "Psoriasis", "malignant melanoma",
                                                                    "possible eczema (40%)", ""])), max_size=8),
       st.none() | st.integers(0, 8))
def test_parse_diagnosis_matches_reads_the_entries_parse_diagnoses_reads(labels, k):
    from skinflow.formats import parse_diagnosis_matches

    text = format_diagnoses(labels)
    matches = parse_diagnosis_matches(text, k)
    assert [m.entry for m in matches] == parse_diagnoses(text, k)
    for m in matches:
        assert m.label == match_label(m.entry)
        assert (m.label is None) == (not m.labels) and (m.label is None or m.label in m.labels)
        assert len({canonical(label) for label in m.labels}) <= 1


def test_parse_diagnosis_matches_keeps_the_labels_of_repeats():
    from skinflow.formats import parse_diagnosis_matches

    text = "1. basal cell carcinoma morpheiform\n2. xyz\n3. Basal cell carcinoma\n4. xyz\n5. psoriasis"
    assert parse_diagnosis_matches(text) == [
        ("basal cell carcinoma morpheiform", "basal cell carcinoma morpheiform",
         frozenset({"basal cell carcinoma morpheiform", "basal cell carcinoma"})),
        ("xyz", None, frozenset()),
        ("psoriasis", "psoriasis", frozenset({"psoriasis"})),
    ]
    assert parse_diagnosis_matches(text, k=1, match=lambda entry: None) == [
        ("basal cell carcinoma morpheiform", None, frozenset())]
    assert parse_diagnosis_matches(None) == [] and parse_diagnosis_matches(b"1. psoriasis") == []
    with pytest.raises(ValueError, match="k must be"):
        parse_diagnosis_matches(text, k=-1)
