"""SkinCon captions: the 48-concept mapping covers the packaged annotation columns exactly, excluded rows are dropped,
and captions join terms in the vocabulary order."""

import pytest

from skinflow.data import fitzpatrick17k, skincon
from skinflow.formats import CAPTION_FIELDS, FIELD_VALUES, SKINCON_CONCEPTS

# A real usable row with nine concepts and an excluded row (checked against the source CSV when the data was packaged).
RICH_ROW = "35e5b48aad880f40625297aae247119a"
RICH_CONCEPTS = (
    "Plaque",
    "Nodule",
    "Crust",
    "Erosion",
    "Induration",
    "Scar",
    "Friable",
    "Brown(Hyperpigmentation)",
    "Erythema",
)
EXCLUDED_ROW = "8e6dfff9394b54757d7e6b760bb3eb18"


def test_mapping_covers_the_concept_columns_exactly():
    assert len(skincon.CONCEPT_COLUMNS) == 48
    assert set(skincon.CONCEPT_COLUMNS) == set(SKINCON_CONCEPTS)
    assert len(set(SKINCON_CONCEPTS.values())) == 48, "two concepts map to the same (field, term)"
    for concept, (field, term) in SKINCON_CONCEPTS.items():
        assert field in CAPTION_FIELDS, concept
        assert term in FIELD_VALUES[field], concept


def test_row_counts_and_exclusion():
    rows = skincon.annotations()
    assert len(rows) == 3690
    excluded = skincon.excluded_images()
    assert len(excluded) == 460
    captions = skincon.captions()
    assert len(captions) == 3230
    assert not excluded & set(captions)
    assert EXCLUDED_ROW in excluded and EXCLUDED_ROW not in captions
    # excluded rows carry no concept marks in the source
    assert all(not row.concepts for row in rows if row.excluded)


def test_every_caption_is_complete_and_refers_to_a_fitzpatrick_image():
    known = {row.md5hash for row in fitzpatrick17k.metadata()}
    for md5hash, caption in skincon.captions().items():
        assert md5hash in known
        assert tuple(caption) == CAPTION_FIELDS
        assert any(caption.values()), md5hash
        for field in ("location", "number", "size", "border", "distribution", "surrounding"):
            assert caption[field] == ""


def test_real_row_caption_joins_terms_in_vocabulary_order():
    row = next(row for row in skincon.annotations() if row.md5hash == RICH_ROW)
    assert set(row.concepts) == set(RICH_CONCEPTS)
    caption = skincon.captions()[RICH_ROW]
    assert caption["lesion_type"] == "plaque, nodule, scar"
    assert caption["surface"] == "crusted, eroded"
    assert caption["texture"] == "indurated, friable"
    assert caption["color"] == "red, brown"
    assert caption["shape"] == caption["other"] == ""


def test_caption_from_concepts_is_order_independent_and_strict():
    forward = skincon.caption_from_concepts(RICH_CONCEPTS)
    assert skincon.caption_from_concepts(reversed(RICH_CONCEPTS)) == forward
    assert skincon.caption_from_concepts([]) == dict.fromkeys(CAPTION_FIELDS, "")
    assert skincon.caption_from_concepts(["Scale", "Scale"])["surface"] == "scaly"
    with pytest.raises(ValueError, match="unknown SkinCon concept 'Scales'"):
        skincon.caption_from_concepts(["Scales"])
    with pytest.raises(TypeError, match="not a single str"):
        skincon.caption_from_concepts("Scale")
    with pytest.raises(ValueError, match="not a single str"):  # an ArgumentTypeError: TypeError and ValueError
        skincon.caption_from_concepts("Scale")
    with pytest.raises(ValueError, match="unknown SkinCon concept \\['Scale'\\]"):
        skincon.caption_from_concepts([["Scale"]])  # unhashable: a clear error, not "unhashable type"
    with pytest.raises(ValueError, match="not a single int"):
        skincon.caption_from_concepts(3)


def test_captions_returns_fresh_dicts():
    first = skincon.captions()
    first[RICH_ROW]["color"] = "changed"
    assert skincon.captions()[RICH_ROW]["color"] == "red, brown"
