"""The Stage II (ranked diagnosis) reward and the matching core the evaluation shares.

An answer is read as ranked candidates (``formats.parse_diagnosis_matches``: numbered lists, bullets, one line,
comma lists, ``<think>`` blocks ignored, trailing comments and scores such as ``(70%)`` dropped), each matched once to
a Fitzpatrick17k label by :func:`match_candidate` (``taxonomy.match_label``: case, accents, punctuation and hyphens,
plurals, ``ae``/``oe`` spellings, aliases, typos within a length-scaled allowance, a label inside a longer text such as
``possible X`` / ``likely X``; then, for what it leaves unmatched, the same words in another order). A candidate
naming the same diagnosis as an earlier one (same canonical label, or same text when it matches no label) is
dropped, so repeating a candidate never helps, and only the first K distinct candidates count.

For the truth label y and a candidate matched to label c, the levels are::

    exact    y is c, or a label that a later repeat of the candidate names (same diagnosis, another label)
    synonym  canonical(c) == canonical(y)      (taxonomy's synonym merges: "malignant melanoma" is melanoma)
    group9   nine_group(c) == nine_group(y)
    group3   three_group(c) == three_group(y)

:func:`match_ranks` gives, per level, the 1-based rank of the first candidate matching at that level (or ``None``).
With r_L that rank and w the rank weights (``DiagnosisRewardConfig``: linear w_r = (K − r + 1)/K by default,
reciprocal 1/r, or given; w_r = 0 beyond K and for ``None``)::

    score = max(w(r_synonym), c9 · w(r_group9), c3 · w(r_group3))      (c9 = c3 = 0 by default, as in the paper)
"""

from __future__ import annotations

from collections.abc import Sequence

from skinflow.formats import DiagnosisMatch, distinct_matches, normalize_value, parse_diagnosis_matches
from skinflow.rewards._text import _items, completion_text
from skinflow.rewards._truth import target_of
from skinflow.rewards.caption import RewardResult
from skinflow.rewards.config import DiagnosisRewardConfig
from skinflow.targets import DiagnosisTarget
from skinflow.taxonomy import ALIASES, LABELS, _stem, canonical, match_label, nine_group, normalize, three_group

__all__ = ["DIAGNOSIS_PARTS", "LEVELS", "candidate_labels", "match_candidate", "match_ranks", "score_diagnosis"]

LEVELS = ("exact", "synonym", "group9", "group3")
DIAGNOSIS_PARTS: tuple[str, ...] = (
    "score", "rank", "hit", "top1", "exact", "group9", "group3", "candidates", "unmatched", "parsed",
)
_DEFAULT = DiagnosisRewardConfig()
# label -> (label, canonical, 9-way group, 3-way group): the four levels' keys, computed once.
_LEVEL_KEYS = {label: (label, canonical(label), nine_group(label), three_group(label)) for label in LABELS}

# Hedges a model puts before a diagnosis ("possible X", "most likely X", "consistent with X", "r/o X"): a leading
# run of these words is dropped before matching (a word that starts a label or alias never is).
_HEDGE_WORDS = frozenset({
    "possible", "possibly", "probable", "probably", "likely", "most", "more", "less", "least", "suspected",
    "suspect", "suspicious", "suggestive", "consistent", "compatible", "with", "of", "for", "rule", "ruled", "out",
    "r", "o", "query", "presumed", "presumptive", "favor", "favour", "favoring", "favouring", "maybe", "perhaps",
    "differential", "diagnosis", "dx", "ddx", "impression", "is", "the", "a", "an", "could", "be", "may", "might",
    "vs", "versus", "or", "and", "concerning", "concern", "think", "i", "it", "this", "looks", "like",
})
# Words a word-order-free key leaves out, on both sides (hedges and function words).
_ORDER_FREE_SKIPPED = _HEDGE_WORDS | {"type", "form", "in", "on", "to"}
_MAX_ORDER_FREE_WORDS = 10


def _content_words(text: str) -> list[str]:
    """The normalised words of ``text`` (its first 40) that a word-order-free key is made of."""
    return [word for word in normalize(text).split()[:40] if word not in _ORDER_FREE_SKIPPED]


def _order_key(words: list[str]) -> tuple[str, ...]:
    """The word-order-free key of ``words``: taxonomy's stems (so both matchers agree on word forms), sorted."""
    return tuple(sorted(_stem(word) for word in words))


def _order_free_index() -> dict[tuple[str, ...], str]:
    index: dict[tuple[str, ...], str] = {}
    ambiguous: set[tuple[str, ...]] = set()
    for name, label in [*ALIASES.items(), *((label, label) for label in LABELS)]:
        key = _order_key(_content_words(name))
        if not key:
            continue
        known = index.get(key)
        if known is not None and canonical(known) != canonical(label):
            ambiguous.add(key)
        elif known is None or name == label:
            index[key] = label
    for key in ambiguous:
        index.pop(key, None)
    return index


_ORDER_FREE = _order_free_index()
_LEADING_HEDGES = _HEDGE_WORDS - {normalize(name).split()[0] for name in (*LABELS, *ALIASES)}


def match_candidate(text: object) -> str | None:
    """One candidate diagnosis (free text) -> one of ``LABELS`` or ``None``; never raises.

    ``taxonomy.match_label`` of the text without its leading hedge words (``"possible fodyce spots"`` ->
    ``"fodyce spots"``, so that a typo survives a hedge, and ``"most likely congenital nevus"`` is not matched as
    the nevus inside it); and the text's words other than hedge and function words, stemmed, in any order against
    every label and alias (``"carcinoma, basal cell"``, ``"dermatitis seborrheic"``). A word-order match of all the
    words wins over a label found inside the text (``"dermatitis perioral"`` is perioral dermatitis, not the
    eczema that "dermatitis" alone names).
    """
    if not issubclass(type(text), str):
        return None
    words = normalize(str.__str__(text)[:2000]).split()[:40]
    start = 0
    while start < len(words) and words[start] in _LEADING_HEDGES:
        start += 1
    core = words[start:]
    if not core:
        return None
    label = match_label(" ".join(core))
    content = [word for word in core if word not in _ORDER_FREE_SKIPPED]
    if len(content) < 2 or len(content) > _MAX_ORDER_FREE_WORDS:  # one word has no other order
        return label
    reordered = _ORDER_FREE.get(_order_key(content))
    if reordered is None or (label is not None and _LEVEL_KEYS[label][1] == _LEVEL_KEYS[reordered][1]):
        return label
    return reordered


def _matches(answer: object, k: int | None) -> list[DiagnosisMatch]:
    """The distinct candidates of an answer (raw or parsed, see :func:`candidate_labels`) with their labels."""
    items = _items(answer, None)
    if items is not None and all(type(item) is str for item in items):
        return distinct_matches((normalize_value(item) for item in items), k, match_candidate)
    text = completion_text(answer)
    if text is None:
        return []
    return parse_diagnosis_matches(text, k, match_candidate)


def candidate_labels(answer: object, k: int | None = None) -> list[tuple[str, str | None]]:
    """The first ``k`` (all when ``None``) distinct candidates of an answer with the label each matches.

    Args:
        answer: the model's answer (str, message dict or list of messages, see ``completion_text``), or a list of
            candidate strings already parsed (each normalised and matched; a list holding anything but strings is
            read as messages).

    Returns:
        ``[(candidate text, label or None), ...]`` in rank order, distinct by canonical label (or by text when a
        candidate matches no label).
    """
    return [(m.entry, m.label) for m in _matches(answer, k)]


def _ranks(matched: Sequence[DiagnosisMatch], target: DiagnosisTarget) -> dict[str, int | None]:
    truth = _LEVEL_KEYS[target.label]
    ranks: dict[str, int | None] = dict.fromkeys(LEVELS)
    for rank, (_, label, labels) in enumerate(matched, start=1):
        if label is None:
            continue
        if ranks["exact"] is None and target.label in labels:
            ranks["exact"] = rank
        keys = _LEVEL_KEYS[label]
        for level, key, want in zip(LEVELS[1:], keys[1:], truth[1:]):
            if ranks[level] is None and key == want:
                ranks[level] = rank
    return ranks


def match_ranks(answer: object, target: DiagnosisTarget | object, k: int | None = None) -> dict[str, int | None]:
    """For each level of ``LEVELS``, the 1-based rank of the first of the first K distinct candidates that matches
    ``target`` at that level, or ``None`` (K = ``k``, default ``target.k``); never raises on any ``answer``.

    ``answer`` is what :func:`candidate_labels` accepts (raw answer or parsed candidates); ``target`` a
    ``targets.DiagnosisTarget``, its JSON object or its JSON text (a malformed one raises ``targets.TargetError``,
    a ValueError). Acc@j at level L of a set
    of answers is the fraction whose rank at L is <= j, which is how the evaluation reads it.
    """
    if not isinstance(target, DiagnosisTarget):
        target = target_of(target, "diagnosis")
    return _ranks(_matches(answer, target.k if k is None else k), target)


def score_diagnosis(
    completion: object, target: DiagnosisTarget | object, config: DiagnosisRewardConfig | None = None
) -> RewardResult:
    """The Stage II reward of ``completion`` against ``target`` (a ``targets.DiagnosisTarget``, its JSON object or
    its JSON text; a malformed one raises ``targets.TargetError``, a ValueError); never raises on any completion.

    Returns:
        the score in [0, 1] (module docstring) and its parts: ``rank`` (synonym-level rank within K, 0 when none),
        ``hit`` (1 when that rank exists), ``top1``, ``exact`` / ``group9`` / ``group3`` (1 when a candidate within
        K matches at that level), ``candidates`` (distinct candidates read, <= K), ``unmatched`` (those matching no
        label) and ``parsed`` (1 when there is any candidate).
    """
    if not isinstance(target, DiagnosisTarget):
        target = target_of(target, "diagnosis")
    config = _DEFAULT if config is None else config
    k = target.k if config.k is None else config.k
    matched = _matches(completion, k)
    ranks = _ranks(matched, target)
    score = config.weight(ranks["synonym"], k)
    if config.group9_credit:
        score = max(score, config.group9_credit * config.weight(ranks["group9"], k))
    if config.group3_credit:
        score = max(score, config.group3_credit * config.weight(ranks["group3"], k))
    synonym = ranks["synonym"]
    parts = {
        "score": score,
        "rank": float(synonym or 0),
        "hit": float(synonym is not None),
        "top1": float(synonym == 1),
        "exact": float(ranks["exact"] is not None),
        "group9": float(ranks["group9"] is not None),
        "group3": float(ranks["group3"] is not None),
        "candidates": float(len(matched)),
        "unmatched": float(sum(m.label is None for m in matched)),
        "parsed": float(bool(matched)),
    }
    return RewardResult(score, parts)
