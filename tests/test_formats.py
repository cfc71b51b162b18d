"""Tests of skinflow.formats: the caption schema and the ranked-diagnosis format, their formatters and parsers."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skinflow.formats import (
    CAPTION_FIELDS,
    CAPTION_PROMPT,
    DEFAULT_K,
    DIAGNOSIS_PROMPT,
    FIELD_VALUES,
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
