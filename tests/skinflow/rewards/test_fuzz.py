"""Fuzz suite for the rewards: any completion value (any str, non-str, message lists, deep nesting, megabytes) gives a
finite float in [0, 1] with finite parts, never an exception, in bounded time (a generous alarm, not a benchmark)."""

import json
import math

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from skinflow.formats import CAPTION_FIELDS, FIELD_VALUES, format_caption
from skinflow.rewards import (
    CAPTION_PARTS,
    DIAGNOSIS_PARTS,
    CaptionRewardConfig,
    DiagnosisRewardConfig,
    candidate_labels,
    match_ranks,
    score_caption,
    score_diagnosis,
)
from skinflow.rewards.trl import caption_reward, diagnosis_reward
from skinflow.rewards.verl import compute_score
from skinflow.targets import SKINCON_FIELDS, CaptionTarget, DiagnosisTarget
from skinflow.taxonomy import LABELS
from tests.skinflow.adversarial import time_limit

_FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_FEW = settings(max_examples=8, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])

CAPTION_TARGETS = (
    CaptionTarget({"color": "red, brown", "lesion_type": "plaque", "surface": "scaly", "texture": "", "other": ""}),
    CaptionTarget({field: "" for field in SKINCON_FIELDS} | {"lesion_type": "papule"}),
)
DIAGNOSIS_TARGETS = (DiagnosisTarget("psoriasis"), DiagnosisTarget("malignant melanoma", 3))
CONFIGS = (CaptionRewardConfig(), CaptionRewardConfig(format_weight=1.0, field_weights={"color": 1.0}))
DX_CONFIGS = (DiagnosisRewardConfig(), DiagnosisRewardConfig("reciprocal", group9_credit=0.5, group3_credit=0.2))


def _check(completion, seconds: float = 5.0) -> None:
    with time_limit(seconds):
        for target in CAPTION_TARGETS:
            for config in CONFIGS:
                parts = score_caption(completion, target, config).as_dict()
                assert set(parts) == set(CAPTION_PARTS)
                assert all(type(v) is float and math.isfinite(v) for v in parts.values()), parts
                assert 0.0 <= parts["score"] <= 1.0
        for target in DIAGNOSIS_TARGETS:
            for config in DX_CONFIGS:
                parts = score_diagnosis(completion, target, config).as_dict()
                assert set(parts) == set(DIAGNOSIS_PARTS)
                assert all(type(v) is float and math.isfinite(v) for v in parts.values()), parts
                assert 0.0 <= parts["score"] <= 1.0
                assert parts["candidates"] <= target.k
            ranks = match_ranks(completion, target)
            assert all(r is None or 1 <= r <= target.k for r in ranks.values())
        assert len(candidate_labels(completion, k=6)) <= 6


_vocabulary = st.sampled_from(sorted({term for terms in FIELD_VALUES.values() for term in terms} | set(LABELS)))
_words = st.lists(st.one_of(_vocabulary, st.text(max_size=12)), max_size=8).map(" ".join)
_lines = st.lists(
    st.one_of(
        st.builds(lambda f, v: f"{f.replace('_', ' ')}: {v}", st.sampled_from(CAPTION_FIELDS), _words),
        st.builds(lambda i, v: f"{i}. {v}", st.integers(-3, 120), _words),
        _words, st.text(max_size=40),
    ),
    max_size=20,
).map("\n".join)
_texts = st.one_of(st.text(max_size=300), _lines, st.binary(max_size=200).map(lambda b: b.decode("utf-8", "replace")))
_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.binary(max_size=50), _texts)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.tuples(inner, inner),
        st.dictionaries(st.sampled_from(["role", "content", "text", "type"]) | st.text(max_size=5), inner, max_size=4),
    ),
    max_leaves=20,
)
_messages = st.lists(
    st.fixed_dictionaries({"role": st.sampled_from(["assistant", "user", "system", "tool", ""]) | _scalars,
                           "content": st.one_of(_texts, st.lists(st.one_of(
                               st.fixed_dictionaries({"type": st.just("text"), "text": _texts | _scalars}),
                               _texts, _scalars), max_size=4), _scalars)}),
    max_size=4,
)


@_FAST
@given(_texts)
@example("")
@example(format_caption({"color": "red"}) + "\n" + "1. psoriasis")
@example("color:" * 500)
@example("1. " * 2000)
@example("\u202ecolor\u200b: r\x00ed\r\n1. pso\u00adriasis")
@example("<think>" * 100 + "</think>")
@example("{" * 5000 + "}" * 5000)
def test_any_text(text):
    _check(text)


@_FAST
@given(_values)
def test_any_value(value):
    _check(value)


@_FAST
@given(_messages)
def test_any_message_list(messages):
    _check(messages)


@_FEW
@given(st.sampled_from([
    "x" * 1_000_000, "color: red\n" * 100_000, "1. psoriasis\n" * 80_000, ("a" * 1000 + "\n") * 1000,
    "color: " + "red, " * 250_000, " " * 1_000_000, "1. " + "possible " * 200_000 + "psoriasis",
    json.dumps({"color": ["red"] * 100_000}), "\u0301" * 500_000,
]))
def test_megabytes(text):
    _check(text, seconds=10.0)
    _check([{"role": "assistant", "content": text}] * 3, seconds=10.0)


def _deep(depth: int, kind: str):
    value: object = "1. psoriasis"
    for _ in range(depth):
        value = [value] if kind == "list" else {"role": "assistant", "content": value}
    return value


def test_deep_nesting():
    for kind in ("list", "dict"):
        _check(_deep(100_000, kind))
    _check("[" * 100_000 + "]" * 100_000)
    _check('{"color": ' * 50_000 + "1" + "}" * 50_000)


class _Hostile(str):
    """A str subclass whose methods raise: the rewards must read it as plain text."""

    def __getattribute__(self, name):
        raise RuntimeError("hostile")

    def __len__(self):
        raise RuntimeError("hostile")

    def __iter__(self):
        raise RuntimeError("hostile")


class _HostileList(list):
    def __iter__(self):
        raise RuntimeError("hostile")

    def __len__(self):
        raise RuntimeError("hostile")


class _HostileDict(dict):
    def get(self, *args):
        raise RuntimeError("hostile")

    def __getitem__(self, key):
        raise RuntimeError("hostile")


def test_hostile_objects():
    _check(_Hostile("1. psoriasis\ncolor: red"))
    _check(_HostileList(["1. psoriasis", {"role": "assistant", "content": "color: red"}]))
    _check(_HostileDict(role="assistant", content="1. psoriasis"))
    _check([_HostileDict(role="assistant", content=_Hostile("color: red"))])


@_FAST
@given(st.one_of(_texts, _values))
def test_the_adapters_never_raise_on_completions(completion):
    truths = [json.dumps(CAPTION_TARGETS[0].to_json()), json.dumps(DIAGNOSIS_TARGETS[0].to_json())]
    for truth in truths:
        out = compute_score("fuzz", completion, truth)
        assert all(type(v) is float and math.isfinite(v) for v in out.values())
    assert 0.0 <= caption_reward(completions=[completion], ground_truth=truths[:1])[0] <= 1.0
    assert 0.0 <= diagnosis_reward(completions=[completion], ground_truth=truths[1:])[0] <= 1.0
