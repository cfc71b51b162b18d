"""The Stage I (caption) reward: the field scores, hallucinations, unknown fields, the format term, λ and the weights α."""

import json
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skinflow.formats import CAPTION_FIELDS, FIELD_VALUES, format_caption
from skinflow.rewards import (
    CAPTION_PARTS,
    TERM_SYNONYMS,
    CaptionRewardConfig,
    CaptionWeights,
    field_score,
    map_term,
    score,
    score_caption,
)
from skinflow.rewards.noisy import random_caption
from skinflow.rewards.terms import split_terms, term_key
from skinflow.targets import SKINCON_FIELDS, CaptionTarget, TargetError

FULL = {
    "color": "red, brown", "location": "forearm", "shape": "round", "lesion_type": "plaque", "number": "single",
    "size": "medium", "texture": "", "border": "well-defined", "surface": "scaly", "distribution": "localized",
    "surrounding": "", "other": "",
}
FULL_TARGET = CaptionTarget(FULL)
# A SkinCon-derived target: only the fields its concepts cover, most of them known to be empty.
SKINCON_TARGET = CaptionTarget({field: "" for field in SKINCON_FIELDS} | {"lesion_type": "papule", "color": "red"})


def caption_text(**fields: str) -> str:
    return format_caption(dict(FULL) | fields)


# --- exact target, empty and unparseable answers -------------------------------------------------------------


@pytest.mark.parametrize("target", [FULL_TARGET, SKINCON_TARGET, CaptionTarget({"color": ""})], ids=["full", "skincon", "one-empty"])
def test_the_exact_target_scores_exactly_one(target):
    result = score_caption(format_caption(target.values), target)
    assert result.score == 1.0
    assert result.parts["content"] == 1.0 and result.parts["format"] == 1.0
    assert result.parts["hallucinations"] == 0.0


@settings(max_examples=60, deadline=None)
@given(st.randoms(use_true_random=False), st.sets(st.sampled_from(CAPTION_FIELDS), min_size=1),
       st.floats(0, 1), st.sampled_from(["uniform", "given"]))
def test_any_exact_target_scores_one(rng, known, lam, weighting):
    caption = {field: ", ".join(rng.sample(FIELD_VALUES[field], rng.randint(0, 2))) for field in CAPTION_FIELDS}
    target = CaptionTarget({field: caption[field] for field in known})
    weights = CaptionWeights.uniform() if weighting == "uniform" else CaptionWeights.given(
        {field: rng.random() for field in CAPTION_FIELDS} | {"color": 1.0})
    result = score_caption(format_caption(target.values), target, CaptionRewardConfig(lam, weights))
    assert result.score == 1.0


# Free text of words (a value holding "field:" after a comma would read as another field: the layout cannot say it)
_FREE_TEXT = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789 -.()'"), min_size=1, max_size=20)


@settings(max_examples=80, deadline=None)
@given(st.dictionaries(st.sampled_from(CAPTION_FIELDS), st.lists(
    st.one_of(st.sampled_from(sorted({t for terms in FIELD_VALUES.values() for t in terms})), _FREE_TEXT),
    max_size=3).map(", ".join), min_size=1))
def test_any_exact_target_with_free_text_scores_one(caption):
    target = CaptionTarget(caption)
    assert score_caption(format_caption(target.values), target).score == 1.0


@pytest.mark.parametrize("answer", ["", "   \n\n", "I cannot describe this image.", "The lesion is red and scaly.",
                                    None, 12345, b"color: red", [], {}, [{"role": "assistant", "content": ""}],
                                    object()])
@pytest.mark.parametrize("target", [FULL_TARGET, SKINCON_TARGET], ids=["full", "skincon"])
def test_an_empty_or_unparseable_answer_scores_zero(answer, target):
    result = score_caption(answer, target)
    assert result.score == 0.0
    assert result.parts["parsed"] == 0.0 and result.parts["stated"] == 0.0


def test_an_answer_of_only_empty_placeholders_scores_like_empty_values():
    # "none" is a stated empty value: right for fields known empty, wrong for the others.
    answer = "\n".join(f"{field.replace('_', ' ')}: none" for field in CAPTION_FIELDS)
    result = score_caption(answer, FULL_TARGET)
    assert result.parts["field/texture"] == 1.0 and result.parts["field/color"] == 0.0
    assert result.parts["content"] == pytest.approx(3 / 12)


# --- field scores ------------------------------------------------------------------------------------------------


def test_known_empty_and_stated_empty_scores_one_not_stated_scores_zero():
    target = CaptionTarget({"color": "red", "texture": ""})
    stated_empty = score_caption("color: red\ntexture:", target)
    assert stated_empty.parts["field/texture"] == 1.0
    missing = score_caption("color: red", target)
    assert missing.parts["field/texture"] == 0.0
    assert missing.parts["stated"] == 0.5
    assert stated_empty.score > missing.score


def test_a_value_in_a_field_known_empty_is_a_hallucination():
    target = CaptionTarget({"color": "red", "texture": "", "surrounding": ""})
    honest = score_caption("color: red\ntexture:\nsurrounding:", target)
    hallucinating = score_caption("color: red\ntexture: rough\nsurrounding: erythema", target)
    assert hallucinating.parts["field/texture"] == 0.0 and hallucinating.parts["hallucinations"] == 2.0
    assert honest.parts["hallucinations"] == 0.0
    assert hallucinating.parts["content"] == pytest.approx(1 / 3)
    assert honest.score > hallucinating.score


def test_negated_and_placeholder_values_state_nothing():
    target = CaptionTarget({"surface": "", "other": ""})
    result = score_caption("surface: no scale\nother: not visible", target)
    assert result.parts["field/surface"] == 1.0 and result.parts["field/other"] == 1.0
    assert result.parts["hallucinations"] == 0.0


def test_a_known_field_with_terms_scores_the_f1_of_terms():
    target = CaptionTarget({"color": "red, brown"})
    assert score_caption("color: red", target).parts["field/color"] == pytest.approx(2 / 3)
    assert score_caption("color: red, brown, tan", target).parts["field/color"] == pytest.approx(0.8)
    assert score_caption("color: brown and red", target).parts["field/color"] == 1.0
    assert score_caption("color: blue", target).parts["field/color"] == 0.0
    assert score_caption("color:", target).parts["field/color"] == 0.0
    assert field_score("color", "red", "red, brown") == pytest.approx(2 / 3)
    assert field_score("color", None, "") == 0.0 and field_score("color", "", "") == 1.0


@pytest.mark.parametrize("field, said, meant", [
    ("color", "erythematous", "red"), ("color", "Reddish", "red"), ("color", "bright red", "red"),
    ("color", "flesh-coloured", "skin-colored"), ("color", "grey", "gray"), ("color", "erythmatous", "red"),
    ("lesion_type", "papules", "papule"), ("lesion_type", "Bullae", "bulla"), ("lesion_type", "patches", "patch"),
    ("lesion_type", "plaqeu", "plaque"), ("lesion_type", "small scaly plaques", "plaque"),
    ("border", "well circumscribed", "well-defined"), ("border", "well-demarcated", "well-defined"),
    ("border", "well defined", "well-defined"), ("border", "welldefined", "well-defined"),
    ("border", "poorly defined", "ill-defined"), ("border", "not well defined", "ill-defined"),
    ("surface", "scaling", "scaly"), ("surface", "scale", "scaly"), ("surface", "fine white scale", "scaly"),
    ("surface", "CRUSTS", "crusted"), ("surface", "verrucous", "warty"), ("surface", "hyperkeratotic", "keratotic"),
    ("number", "solitary", "single"), ("number", "several", "few"), ("size", "tiny", "pinpoint"),
    ("distribution", "clustered", "grouped"), ("distribution", "symmetrical", "symmetric"),
    ("location", "left lower leg", "leg"), ("location", "feet", "foot"), ("location", "cheeks", "cheek"),
    ("surrounding", "oedema", "edema"), ("other", "alopecia", "hair loss"), ("texture", "lichenification", "lichenified"),
])
def test_terms_map_onto_the_schema_vocabulary(field, said, meant):
    target = CaptionTarget({field: meant})
    result = score_caption(f"{field.replace('_', ' ')}: {said}", target)
    assert result.parts[f"field/{field}"] == 1.0, (said, map_term(field, term_key(said.lower())))


@pytest.mark.parametrize("field, text", [("color", "purple"), ("lesion_type", "nodule"), ("border", "ill-defined"),
                                         ("surface", "smooth"), ("color", "brwn"), ("lesion_type", "pap")])
def test_other_terms_do_not_match(field, text):
    wanted = {"color": "brown", "lesion_type": "papule", "border": "well-defined", "surface": "scaly"}[field]
    assert score_caption(f"{field.replace('_', ' ')}: {text}", CaptionTarget({field: wanted})).parts[f"field/{field}"] == 0


def test_free_text_terms_compare_as_normalised_text():
    target = CaptionTarget({"size": "2 cm"})
    assert score_caption("size: 2  CM", target).parts["field/size"] == 1.0
    assert score_caption("size: 3 cm", target).parts["field/size"] == 0.0


def test_the_synonym_table_maps_only_onto_vocabulary_terms():
    for field, table in TERM_SYNONYMS.items():
        assert field in CAPTION_FIELDS
        for synonym, terms in table.items():
            terms = (terms,) if isinstance(terms, str) else terms
            assert set(terms) <= set(FIELD_VALUES[field]), (field, synonym)
            assert map_term(field, term_key(synonym)) == tuple(terms)
    for field in CAPTION_FIELDS:
        for term in FIELD_VALUES[field]:
            assert map_term(field, term_key(term)) == (term,)


def test_split_terms():
    assert split_terms("red, brown and tan; pink / purple + gray & white or blue") == [
        "red", "brown", "tan", "pink", "purple", "gray", "white", "blue"]
    assert split_terms("") == [] and split_terms("none, n/a") == []
    assert split_terms("well-defined, well defined") == ["well defined"]
    assert len(split_terms(", ".join(f"t{i}" for i in range(1000)))) == 32


# --- unknown fields and partial targets ------------------------------------------------------------------------


def test_fields_the_target_does_not_know_are_ignored():
    target = CaptionTarget({"color": "red"})
    plain = score_caption("color: red", target)
    noisy = score_caption("color: red\nlocation: scalp\nsize: huge\nother: bleeding", target)
    assert plain.parts["content"] == noisy.parts["content"] == 1.0
    assert noisy.parts["hallucinations"] == 0.0 and noisy.parts["known"] == 1.0
    assert noisy.parts["field/location"] == 0.0 and noisy.parts["known/location"] == 0.0
    assert noisy.parts["known/color"] == 1.0


def test_a_skincon_like_target_scores_only_its_fields():
    answer = format_caption({"color": "red", "lesion_type": "papule", "location": "back", "size": "small"})
    result = score_caption(answer, SKINCON_TARGET)
    assert result.score == 1.0
    assert result.parts["known"] == len(SKINCON_FIELDS)
    wrong = format_caption({"color": "red", "lesion_type": "papule", "surface": "scaly"})
    assert score_caption(wrong, SKINCON_TARGET).parts["hallucinations"] == 1.0


# --- format term and λ ---------------------------------------------------------------------------------------------


def test_the_format_term():
    exact = caption_text()
    assert score_caption(exact, FULL_TARGET).parts["format"] == 1.0
    preamble = "Here is the description:\n" + exact
    assert score_caption(preamble, FULL_TARGET).parts["format"] == pytest.approx(12 / 13)
    lines = exact.split("\n")
    missing = "\n".join(lines[:-1])
    assert score_caption(missing, FULL_TARGET).parts["format"] == pytest.approx((11 / 12) * 1)
    swapped = "\n".join([lines[1], lines[0], *lines[2:]])
    assert score_caption(swapped, FULL_TARGET).parts["format"] == pytest.approx((11 / 12) * (11 / 12))
    bulleted = "\n".join(f"- **{line}**" for line in lines)
    assert score_caption(bulleted, FULL_TARGET).parts["format"] == 0.0
    as_json = json.dumps(FULL)
    result = score_caption(as_json, FULL_TARGET)
    assert result.parts["format"] == 0.0 and result.parts["content"] == 1.0
    assert result.score == pytest.approx(0.9)
    thinking = "<think>red, scaly, plaque</think>\n" + exact
    assert score_caption(thinking, FULL_TARGET).score == 1.0
    one_line = "; ".join(lines)
    assert score_caption(one_line, FULL_TARGET).parts["format"] == 0.0


def test_format_weight_lambda():
    wrong = caption_text(color="blue", lesion_type="nodule")
    content = score_caption(wrong, FULL_TARGET).parts["content"]
    assert score_caption(wrong, FULL_TARGET, CaptionRewardConfig(format_weight=0.0)).score == pytest.approx(content)
    assert score_caption(wrong, FULL_TARGET, CaptionRewardConfig(format_weight=1.0)).score == 1.0
    assert score_caption(wrong, FULL_TARGET).score == pytest.approx(0.9 * content + 0.1)
    for bad in (-0.1, 1.5, float("nan"), "0.1", True, None):
        with pytest.raises(ValueError, match="format_weight"):
            CaptionRewardConfig(format_weight=bad)


# --- weights α ----------------------------------------------------------------------------------------------------


def test_weights_weigh_the_fields():
    target = CaptionTarget({"color": "red", "shape": "round"})
    answer = "color: red\nshape: oval"
    assert score_caption(answer, target).parts["content"] == 0.5
    color_only = CaptionRewardConfig(field_weights={"color": 3.0, "shape": 1.0})
    assert score_caption(answer, target, color_only).parts["content"] == pytest.approx(0.75)
    zero_for_known = CaptionRewardConfig(field_weights={"location": 1.0})  # every known field weighs 0: uniform
    assert score_caption(answer, target, zero_for_known).parts["content"] == 0.5


@pytest.mark.parametrize("weights, message", [
    ({"colour": 1.0}, "unknown fields"), ({"color": -1.0}, "finite and >= 0"), ({"color": float("nan")}, "finite"),
    ({"color": float("inf")}, "finite"), ({"color": "1"}, "must be a number"), ({"color": True}, "must be a number"),
    ({"color": 0.0}, "all zero"), ({}, "all zero"),
])
def test_given_weights_are_validated(weights, message):
    with pytest.raises(ValueError, match=message):
        CaptionWeights.given(weights)
    with pytest.raises(ValueError, match=message):
        CaptionRewardConfig(field_weights=weights)


def _records(n: int, seed: int = 0) -> list[dict]:
    """Records where lesion type decides the label, colour half-decides it, and location is random."""
    rng = random.Random(seed)
    labels = {"papule": "psoriasis", "nodule": "basal cell carcinoma", "vesicle": "eczema", "wheal": "urticaria"}
    records = []
    for _ in range(n):
        lesion = rng.choice(sorted(labels))
        color = "red" if labels[lesion] in ("psoriasis", "eczema") else rng.choice(["pink", "brown"])
        caption = {"lesion_type": lesion, "color": color, "location": rng.choice(FIELD_VALUES["location"])}
        records.append({"caption": caption, "label": labels[lesion]})
    return records


def test_weights_from_records_follow_how_informative_each_field_is():
    weights = CaptionWeights.from_records(_records(2000))
    w = weights.weights
    assert weights.method == "records"
    assert w["lesion_type"] > w["color"] > w["location"]
    assert w["location"] == pytest.approx(w["other"])  # a random field is worth no more than an empty one
    floor = weights.details["floor"] * max(w.values())
    assert min(w.values()) == pytest.approx(floor) and floor > 0
    assert sum(w.values()) == pytest.approx(1.0)
    stats = weights.details["fields"]
    assert stats["lesion_type"]["u"] == pytest.approx(1.0, abs=0.01)
    assert weights.details["records"] == 2000


def test_weights_from_records_use_only_the_fields_a_record_knows():
    records = _records(400)
    for record in records[:200]:
        record["caption_fields"] = ["color", "location"]
    weights = CaptionWeights.from_records(records)
    assert weights.details["fields"]["lesion_type"]["n"] == 200
    assert weights.details["fields"]["color"]["n"] == 400


def test_weights_from_uninformative_records_are_uniform():
    records = [{"caption": {"color": "red"}, "label": "psoriasis"}] * 10
    weights = CaptionWeights.from_records(records)
    assert len(set(weights.weights.values())) == 1 and "note" in weights.details


@pytest.mark.parametrize("records, message", [
    ([], "records is empty"), ([1], r"records\[0\] must be a mapping"),
    ([{"label": "psoriasis"}], r"records\[0\].caption"), ([{"caption": {"colour": "red"}, "label": "psoriasis"}],
                                                          "unknown caption fields"),
    ([{"caption": {"color": 3}, "label": "psoriasis"}], r"records\[0\].caption.color"),
    ([{"caption": {"color": "red"}, "label": None}], r"records\[0\].label"),
    ([{"caption": {"color": "red"}, "label": "eczema", "caption_fields": "color"}], "caption_fields"),
])
def test_malformed_records_are_named(records, message):
    with pytest.raises(ValueError, match=message):
        CaptionWeights.from_records(records)


def test_weights_serialise_to_json_and_back(tmp_path):
    for weights in (CaptionWeights.uniform(), CaptionWeights.given({"color": 2.0}),
                    CaptionWeights.from_records(_records(200))):
        text = json.dumps(weights.to_json())
        again = CaptionWeights.from_json(text)
        assert again == weights and again.method == weights.method
        path = tmp_path / f"{weights.method}.json"
        weights.save(path)
        assert CaptionWeights.load(path) == weights
        assert CaptionRewardConfig(field_weights=str(path)).field_weights == weights
        assert CaptionRewardConfig(field_weights=weights.to_json()).field_weights == weights
    with pytest.raises(ValueError, match="not valid JSON"):
        CaptionWeights.from_json("{")
    with pytest.raises(ValueError, match="cannot read field weights file"):
        CaptionWeights.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text('{"method": "records", "weights": {"color": -1}}')
    with pytest.raises(ValueError, match="bad.json"):
        CaptionWeights.load(tmp_path / "bad.json")


def test_config_records_its_weights():
    config = CaptionRewardConfig(0.2, CaptionWeights.from_records(_records(100)))
    recorded = json.loads(json.dumps(config.to_json()))
    assert recorded["format_weight"] == 0.2 and recorded["field_weights"]["method"] == "records"
    assert CaptionRewardConfig.from_mapping(recorded) == config


# --- ground truths and parts ---------------------------------------------------------------------------------------


def test_malformed_caption_ground_truths_raise_value_errors_naming_them():
    with pytest.raises(ValueError, match="unknown fields"):
        score("color: red", {"stage": "caption", "caption": {"colour": "red"}})
    with pytest.raises(ValueError, match="knows no field"):
        score("color: red", {"stage": "caption", "caption": {}})
    with pytest.raises(ValueError, match="not valid JSON"):
        score("color: red", '{"stage": "caption"')
    with pytest.raises(TargetError, match="caption.color"):
        score("color: red", {"stage": "caption", "caption": {"color": 7}})
    with pytest.raises(TargetError, match="'stage'"):
        score_caption("color: red", {"color": "red"})
    with pytest.raises(TargetError, match="expected 'caption'"):
        score_caption("color: red", {"stage": "diagnosis", "label": "psoriasis"})
    assert score_caption("color: red", {"stage": "caption", "caption": {"color": "red"}}).parts["content"] == 1.0


def test_parts_are_the_same_finite_floats_for_every_answer():
    rng = random.Random(3)
    for answer in [caption_text(), "", None, "color: blue\nshape: irregular", json.dumps(FULL)]:
        for target in (FULL_TARGET, SKINCON_TARGET, CaptionTarget(random_caption(rng))):
            parts = score_caption(answer, target).as_dict()
            assert tuple(parts)[0] == "score" and set(parts) == set(CAPTION_PARTS)
            assert all(type(v) is float and math.isfinite(v) for v in parts.values())
            assert 0.0 <= parts["score"] <= 1.0
