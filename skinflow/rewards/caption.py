"""The Stage I (structured caption) reward.

For a target that knows the fields F (``targets.CaptionTarget``; a field it does not know is ignored)::

    content = Σ_{i∈F} α_i s_i / Σ_{i∈F} α_i            (uniform over F when every α_i of F is 0)
    score   = (1 − λ) · content + λ · format            (λ = format_weight, default 0.1)

Field score s_i, with P the predicted terms of field i and T the target's, both mapped onto the field's vocabulary by
:mod:`skinflow.rewards.terms` (free-text terms compare as normalised text):

- the answer does not state field i at all: s_i = 0 (so an empty or unparseable answer scores 0, however many
  of the known fields are empty);
- T is empty (the target knows the field is empty): s_i = 1 when P is empty (stated empty, ``"none"``, ``"no
  scale"``), else 0 — a *hallucination*, counted in the ``hallucinations`` part;
- T is not empty: s_i = F1(P, T) = 2|P ∩ T| / (|P| + |T|) (0 when P is empty).

Format, in [0, 1]: with n the non-empty lines of the answer (``<think>`` blocks removed) and m the lines in the exact
``field: value`` layout, counted in schema order (:func:`skinflow.formats.read_caption`),
``format = (m / 12) · (m / max(n, 1))``: it is 1 exactly for the twelve lines of ``formats.format_caption`` (what
the Stage I prompt asks for), falls with every missing, repeated, out-of-order or decorated field line and with every
extra line (preamble, prose), and is 0 for JSON, prose or an empty answer.

The exact target (``format_caption`` of its values, unknown fields written empty) scores exactly 1.
"""

from __future__ import annotations

from dataclasses import dataclass

from skinflow.formats import CAPTION_FIELDS, read_caption
from skinflow.rewards._text import completion_text
from skinflow.rewards._truth import target_of
from skinflow.rewards.config import CaptionRewardConfig
from skinflow.rewards.terms import map_term, split_terms
from skinflow.targets import CaptionTarget

__all__ = ["CAPTION_PARTS", "RewardResult", "field_score", "score_caption"]

_DEFAULT = CaptionRewardConfig()
CAPTION_PARTS: tuple[str, ...] = (
    "score", "content", "format", "parsed", "stated", "hallucinations", "known",
    *(f"field/{name}" for name in CAPTION_FIELDS), *(f"known/{name}" for name in CAPTION_FIELDS),
)
_ZERO_PARTS = dict.fromkeys(CAPTION_PARTS, 0.0)
_PART_KEYS = {name: (f"field/{name}", f"known/{name}") for name in CAPTION_FIELDS}


@dataclass(frozen=True)
class RewardResult:
    """A reward and its parts (every value a finite float; the same keys for every answer of a stage)."""

    score: float
    parts: dict[str, float]

    def as_dict(self) -> dict[str, float]:
        """``{"score": score, **parts}`` (what verl's ``compute_score`` returns)."""
        return {"score": self.score, **self.parts}


def _terms(field: str, value: str) -> tuple[str, ...]:
    """The distinct vocabulary terms (or free-text keys) of a normalised value of ``field``.

    Built without intermediate containers in the usual case of one term (the reward runs in RL's inner loop, where
    every allocation also feeds the garbage collector of a process that holds a whole model's objects).
    """
    if not value:
        return ()
    keys = split_terms(value)
    if len(keys) == 1:
        return map_term(field, keys[0])
    terms: dict[str, None] = {}
    for key in keys:
        for term in map_term(field, key):
            terms[term] = None
    return tuple(terms)


def _f1(want: frozenset[str], got: tuple[str, ...]) -> float:
    """F1 of distinct term collections: 2|P ∩ T| / (|P| + |T|)."""
    common = 0
    for term in got:
        if term in want:
            common += 1
    return 2 * common / (len(want) + len(got))


def field_score(field: str, predicted: str | None, target: str) -> float:
    """s_i for one field: ``predicted`` is the normalised value the answer states (``None``: not stated), ``target``
    the target's normalised value (``""``: known empty). See the module docstring."""
    if predicted is None:
        return 0.0
    want, got = frozenset(_terms(field, target)), _terms(field, predicted)
    if not want:
        return 0.0 if got else 1.0
    return _f1(want, got) if got else 0.0


def _target_terms(target: CaptionTarget) -> dict[str, frozenset[str]]:
    """The mapped terms of every known field of ``target`` (kept on the frozen target: it does not change)."""
    cached = target.__dict__.get("_reward_terms")
    if cached is None:
        cached = {field: frozenset(_terms(field, value)) for field, value in target.values.items()}
        object.__setattr__(target, "_reward_terms", cached)
    return cached


def score_caption(completion: object, target: CaptionTarget | object, config: CaptionRewardConfig | None = None) -> RewardResult:
    """The Stage I reward of ``completion`` against ``target``; never raises on any completion.

    Args:
        completion: the answer: a str, a message dict or a list of messages (see ``completion_text``); anything
            else is unparseable and scores 0.
        target: the ground truth: a ``targets.CaptionTarget``, its JSON object or its JSON text (a malformed one
            raises ``targets.TargetError``, a ValueError naming what is wrong).
        config: the settings (default ``CaptionRewardConfig()``).

    Returns:
        the score in [0, 1] and its parts: ``content``, ``format``, ``parsed`` (1 when the answer states any caption
        field), ``stated`` (fraction of the known fields stated), ``hallucinations`` (known-empty fields given a
        value), ``known`` (number of known fields), ``field/<name>`` (s_i; 0 for a field the target does not know)
        and ``known/<name>`` (1 when the target knows the field), so that the mean of ``field/<name>`` over the
        answers that know it is Σ field/<name> / Σ known/<name>.
    """
    if not isinstance(target, CaptionTarget):
        target = target_of(target, "caption")
    config = _DEFAULT if config is None else config
    text = completion_text(completion)
    reading = read_caption(text) if text is not None else None
    stated = reading.stated if reading is not None else {}
    wanted = _target_terms(target)
    alphas = config.field_weights.weights
    parts = _ZERO_PARTS.copy()
    weighted = total = uniform = 0.0
    stated_known = hallucinations = 0
    for name, want in wanted.items():
        value = stated.get(name)
        if value is None:  # not stated
            s = 0.0
        else:
            stated_known += 1
            got = _terms(name, value)
            if not want:  # known empty: stated empty scores 1, a value is a hallucination
                s = 0.0 if got else 1.0
                hallucinations += bool(got)
            else:
                s = _f1(want, got) if got else 0.0
        field_key, known_key = _PART_KEYS[name]
        parts[field_key] = s
        parts[known_key] = 1.0
        alpha = alphas[name]
        weighted += alpha * s
        total += alpha
        uniform += s
    known = len(wanted)
    content = weighted / total if total > 0 else uniform / known
    if reading is not None and reading.format_lines:
        m = reading.format_lines
        form = (m / len(CAPTION_FIELDS)) * (m / max(reading.lines, 1))
    else:
        form = 0.0
    lam = config.format_weight
    score = min(1.0, max(0.0, content + lam * (form - content)))
    parts.update(score=score, content=content, format=form, parsed=float(bool(stated)),
                 stated=stated_known / known, hallucinations=float(hallucinations), known=float(known))
    return RewardResult(score, parts)
