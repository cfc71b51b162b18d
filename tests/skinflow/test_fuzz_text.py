"""Fuzz suite for everything in skinflow.formats and skinflow.taxonomy that reads model output or free text.

Model output is adversarial: any str (control, bidi and zero-width characters, lone surrogates, full-width forms),
bytes decoded leniently, deeply nested JSON, megabytes, and values that are not str at all. Properties: no
exception, the documented return type and shape, no invisible character in any result, and (through a generous
alarm, not a timing assertion) bounded time.
"""

import contextlib
import functools
import json
import unicodedata

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from skinflow.formats import (
    CAPTION_FIELDS,
    FIELD_VALUES,
    MAX_TEXT_CHARS,
    format_caption,
    format_diagnoses,
    normalize_value,
    parse_caption,
    parse_diagnoses,
    split_values,
)
from skinflow.taxonomy import ALIASES, LABELS, canonical, match_label, nine_group, normalize, three_group
from tests.skinflow.adversarial import FakeStr, HostileStr, Unprintable, time_limit

_FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_SLOW = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


def _is_clean(text: str) -> bool:
    """One line of visible text: no control/format/surrogate/separator characters, single spaces, no edge spaces."""
    if text != text.strip() or "  " in text:
        return False
    if text.isprintable():  # no Cc, Cf, Cs, Zl, Zp, and no Zs but " " (fast on megabytes)
        return True
    return all(ch == " " or not (ch.isspace() or unicodedata.category(ch) in {"Cc", "Cf", "Cs"}) for ch in text)


def _check_text_functions(value, k=None) -> None:
    """Run every text-facing function on ``value`` and check its documented result."""
    caption = parse_caption(value)
    assert isinstance(caption, dict) and tuple(caption) == CAPTION_FIELDS
    assert all(isinstance(item, str) and _is_clean(item) for item in caption.values()), caption

    ranked = parse_diagnoses(value, k)
    assert isinstance(ranked, list)
    assert all(isinstance(entry, str) and entry and _is_clean(entry) for entry in ranked), ranked
    assert len(ranked) == len(set(ranked))
    assert k is None or len(ranked) <= k

    value_text = normalize_value(value)
    assert isinstance(value_text, str) and _is_clean(value_text) and len(value_text) <= MAX_TEXT_CHARS
    assert normalize_value(value_text) == value_text

    terms = split_values(value)
    assert isinstance(terms, list) and len(terms) == len(set(terms))
    assert all(isinstance(term, str) and term and _is_clean(term) for term in terms), terms

    label = match_label(value)
    assert label is None or label in LABELS

    if issubclass(type(value), str):
        normalized = normalize(value)
        assert isinstance(normalized, str)
        assert normalized == "" or (normalized.replace(" ", "").isalnum() and _is_clean(normalized))
        for lookup in (canonical, nine_group, three_group) if len(str.__str__(value)) <= MAX_TEXT_CHARS else ():
            with contextlib.suppress(ValueError):  # documented for a string that is not a label
                assert isinstance(lookup(value), str)
    else:
        with pytest.raises(TypeError):
            normalize(value)


# --- strategies ------------------------------------------------------------------------------------------------

# Any code point, surrogates included (st.characters excludes category Cs by default).
_any_char = st.characters(blacklist_categories=())
_any_text = st.text(_any_char)
_INVISIBLE = ["\x00", "\x1b", "\x1b[31m", "\x7f", "\x9b", "\u200b", "\u200c", "\u200d", "\u200e", "\u202e", "\u2066",
              "\u2069", "\ufeff", "\xad", "\ud800", "\udfff", "\U000e0041"]  # fmt: skip
_LINE_BREAKS = ["\n", "\r\n", "\r", "\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\u2029", "\t"]
_PIECES = [
    *(field.replace("_", " ") for field in CAPTION_FIELDS), "colour", "site", "margin", "Lesion-Type", "ＣＯＬＯＲ",
    ":", "=", "：", ";", "|", ",", "，", " ", "  ", "*", "**", "-", "•", "#", ">", "`", '"', "'", "{", "}", "[", "]",
    "1. ", "2) ", "(3) ", "#4 ", "Top-1: ", "１． ", "Diagnosis: ", "Dx: ", " (70%)", " with 80%", " - likely",
    "<think>", "</think>", "<answer>", "</answer>", "none", "n/a", "and", "or", "/", "+", "&", ".",
    *FIELD_VALUES["color"][:6], *LABELS[:: 9], *list(ALIASES)[:: 7], "ß\u0301", "e\u0301", "\ufdfa",
    *_INVISIBLE, *_LINE_BREAKS,
]  # fmt: skip
# Answer-like text: pieces of the formats glued with arbitrary characters, so that parsing paths are exercised.
_answer_text = st.lists(st.one_of(st.sampled_from(_PIECES), st.text(_any_char, max_size=4)), max_size=40).map("".join)
_lenient_text = st.one_of(
    st.binary().map(lambda data: data.decode("utf-8", "replace")),
    st.binary().map(lambda data: data.decode("utf-8", "surrogateescape")),
    st.binary().map(lambda data: data.decode("latin-1")),
)
_json_scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), _answer_text, st.sampled_from(_PIECES))
_json_key = st.one_of(st.sampled_from([*CAPTION_FIELDS, "Colour", "lesion type", "site"]), _any_text)
_json_value = st.recursive(
    _json_scalar,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_json_key, inner, max_size=4),
    max_leaves=20,
)
_caption_json = st.dictionaries(_json_key, _json_value, max_size=8).map(
    lambda data: json.dumps(data, ensure_ascii=False)
)


@st.composite
def _deep_json(draw) -> str:
    """JSON (or its prefix) nested far deeper than the decoder's recursion limit, with a caption around it."""
    opener = draw(st.sampled_from(["[", "{", '{"color":', '{"a": [', '{"color": "red", "other": [', "[{", '{"":']))
    depth = draw(st.integers(min_value=1, max_value=6000))
    closer = {"[": "]", "{": "}"}
    closing = "".join(closer.get(ch, "") for ch in reversed(opener) if ch in "[{") * depth
    body = opener * depth + draw(_json_scalar.map(json.dumps)) + draw(st.sampled_from(["", closing, closing[:depth]]))
    return draw(st.sampled_from(["", "```json\n", "color: red\n", "1. psoriasis\n"])) + body + draw(_answer_text)


_non_text = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.complex_numbers(),
    st.binary(),
    st.binary().map(bytearray),
    st.binary().map(memoryview),
    st.lists(_answer_text, max_size=3),
    st.tuples(_answer_text),
    st.dictionaries(_answer_text, _answer_text, max_size=3),
    st.just(Unprintable()),
    st.just(FakeStr()),
    st.just(object()),
    st.just(str),
    st.from_type(type).flatmap(st.from_type).filter(lambda value: not isinstance(value, str)),
)


@functools.cache
def _megabytes() -> dict[str, str]:
    """Explicit 1 MB answers (built once, not generated for every example)."""
    line = "color: red, brown\nlesion type: plaque\n1. psoriasis (70%)\n"
    return {
        "formatted lines": line * (1_000_000 // len(line)),
        "deep json": '{"color":' * 120_000,
        "nfkc expands 18x": "\ufdfa" * 1_000_000,
        "invisible": "\u200b\x00\u202e" * 350_000,
        "surrogates": "\ud800" * 1_000_000,
    }


# --- properties -----------------------------------------------------------------------------------------------


@_FAST
@given(_any_text, st.one_of(st.none(), st.integers(min_value=0, max_value=8)))
@example("co\u200blor: r\x00ed\u202e", None)
@example("\ud800\udfff", 1)
@example("\x1b[31m1. psoriasis\x1b[0m", 0)
def test_any_unicode_text(text, k):
    _check_text_functions(text, k)


@_FAST
@given(_answer_text, st.one_of(st.none(), st.integers(min_value=0, max_value=8)))
def test_answer_like_text(text, k):
    _check_text_functions(text, k)
    _check_text_functions(HostileStr(text), k)


@_FAST
@given(_lenient_text)
def test_bytes_decoded_leniently(text):
    _check_text_functions(text, 3)


@_FAST
@given(_caption_json)
def test_json_answers(text):
    _check_text_functions(text)
    _check_text_functions("```json\n" + text + "\n```", 2)


@_SLOW
@given(_deep_json())
def test_deeply_nested_json(text):
    with time_limit(30):
        _check_text_functions(text, 5)


@_FAST
@given(_non_text)
def test_values_that_are_not_text(value):
    _check_text_functions(value, 2)
    assert parse_caption(value) == dict.fromkeys(CAPTION_FIELDS, "")
    assert parse_diagnoses(value) == [] and split_values(value) == []
    assert normalize_value(value) == "" and match_label(value) is None


@pytest.mark.parametrize("name", ["formatted lines", "deep json", "nfkc expands 18x", "invisible", "surrogates"])
def test_megabyte_answers(name):
    text = _megabytes()[name]
    with time_limit(60):
        _check_text_functions(text, None)
        _check_text_functions(text, 6)


@_FAST
@given(st.dictionaries(st.sampled_from(CAPTION_FIELDS), st.one_of(_answer_text, st.lists(_answer_text, max_size=3))))
def test_formatters_take_any_text_values(caption):
    text = format_caption(caption)
    assert isinstance(text, str) and len(text.splitlines()) == len(CAPTION_FIELDS)
    _check_text_functions(text)
    labels = [value for value in caption.values() if isinstance(value, str)]
    _check_text_functions(format_diagnoses(labels))
