"""Targets, defined once: caption targets state the fields they know, diagnosis targets a label and K; both round
trip through JSON, and a malformed ground truth is a TargetError (a ValueError) naming what is wrong."""

import json

import pytest

from skinflow.data.export import ground_truth
from skinflow.formats import CAPTION_FIELDS
from skinflow.targets import (
    SKINCON_FIELDS,
    CaptionTarget,
    DiagnosisTarget,
    TargetError,
    caption_target_of,
    target_from_json,
)


def test_caption_target_knows_only_the_given_fields_and_normalises_values():
    target = CaptionTarget({"color": ["Red", "brown"], "surface": "  Scaly. ", "shape": "none"})
    assert target.known == ("color", "shape", "surface")  # in CAPTION_FIELDS order
    assert target.values == {"color": "red, brown", "shape": "", "surface": "scaly"}
    assert target.terms("color") == ("red", "brown") and target.terms("shape") == ()
    assert not target.is_empty and CaptionTarget({"shape": ""}).is_empty


def test_round_trips_through_json_text_and_objects():
    caption = CaptionTarget({"color": "red", "location": "", "lesion_type": "plaque"})
    diagnosis = DiagnosisTarget("malignant melanoma", k=3)
    for target in (caption, diagnosis):
        assert target_from_json(target.to_json()) == target
        assert target_from_json(json.dumps(target.to_json())) == target
    assert diagnosis.to_json() == {"stage": "diagnosis", "label": "malignant melanoma", "canonical": "melanoma",
                                   "nine_group": "malignant melanoma", "three_group": "malignant", "k": 3}


def test_skincon_records_know_only_the_fields_skincon_covers():
    assert SKINCON_FIELDS == ("color", "shape", "lesion_type", "texture", "surface", "other")
    record = {"caption": dict.fromkeys(CAPTION_FIELDS, "") | {"lesion_type": "plaque"},
              "caption_fields": list(SKINCON_FIELDS), "label": "psoriasis"}
    target = caption_target_of(record)
    assert target.known == SKINCON_FIELDS and "location" not in target.values
    assert ground_truth(record, "caption") == {"stage": "caption", "caption": target.values}
    full = caption_target_of({"caption": record["caption"]})  # no caption_fields: all twelve are known
    assert full.known == CAPTION_FIELDS


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ("{", "not valid JSON"),
        ("[" * 100_000, "nested too deeply"),
        ("[]", "must be an object with 'stage'"),
        ({"stage": "fitting"}, "must be an object with 'stage'"),
        ({"stage": "caption"}, "caption must be an object"),
        ({"stage": "caption", "caption": {}}, "knows no field"),
        ({"stage": "caption", "caption": {"colour": "red"}}, "unknown fields \\['colour'\\]"),
        ({"stage": "caption", "caption": {"color": 3}}, "caption.color must be a string"),
        ({"stage": "diagnosis", "label": "melanomas"}, "label 'melanomas' is not a Fitzpatrick17k label"),
        ({"stage": "diagnosis", "label": ["melanoma"]}, "label \\['melanoma'\\] is not"),
        ({"stage": "diagnosis", "label": "psoriasis", "k": 0}, "k must be an int >= 1, got 0"),
        ({"stage": "diagnosis", "label": "psoriasis", "k": True}, "k must be an int >= 1, got True"),
        ({"stage": "diagnosis", "label": "psoriasis", "canonical": "eczema"}, "canonical 'eczema' does not match"),
    ],
)
def test_malformed_ground_truth_names_what_is_wrong(data, match):
    with pytest.raises(TargetError, match=match) as caught:
        target_from_json(data)
    assert isinstance(caught.value, ValueError)


def test_the_stage_can_be_required():
    with pytest.raises(TargetError, match="stage 'diagnosis' differs from the row's stage 'caption'"):
        target_from_json(DiagnosisTarget("psoriasis").to_json(), stage="caption")
