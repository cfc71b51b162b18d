"""The Fitzpatrick17k taxonomy: 114 labels, their 9-way and 3-way groups, synonym merging and free-text matching.

The label table is package data (``skinflow/resources/fitzpatrick17k_taxonomy.csv``, derived from the Fitzpatrick17k
metadata, CC BY-NC-SA 3.0; see ``skinflow/resources/NOTICE.md``). ``label_merges.csv`` lists the labels that name the
same disease as another label (or a subtype the other label already holds) with the reason for each merge, and
``label_aliases.csv`` maps other clinical names of a label (``"hives"``, ``"bcc"``, ``"morphea"``) onto it.
"""

import csv
import functools
import io
import unicodedata
from importlib import resources

__all__ = [
    "ALIASES",
    "CANONICAL_LABELS",
    "LABELS",
    "MERGE_REASONS",
    "NINE_GROUPS",
    "THREE_GROUPS",
    "canonical",
    "match_label",
    "nine_group",
    "normalize",
    "three_group",
]

_MAX_MATCH_TOKENS = 40
_APOSTROPHES = "'\u2019\u2018`\u00b4"
_IRREGULAR_STEMS = {"nevi": "nevus", "milium": "milia"}


def _read_resource_csv(name: str) -> list[dict[str, str]]:
    """Rows of a CSV file under ``skinflow/resources/`` as dicts keyed by the header."""
    text = resources.files("skinflow").joinpath("resources", name).read_text(encoding="utf-8")
    return list(csv.DictReader(io.StringIO(text)))


def normalize(text: str) -> str:
    """Lower-case ``text``, strip accents and apostrophes, turn every other non-alphanumeric run into one space.

    Args:
        text: any string, e.g. ``"Behçet's  Disease"``.

    Returns:
        the normalised string, e.g. ``"behcets disease"``; ``""`` when nothing alphanumeric is left.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch) and ch not in _APOSTROPHES)
    cleaned = "".join(ch if ch.isalnum() else " " for ch in stripped.casefold())
    return " ".join(cleaned.split())


def _stem(token: str) -> str:
    """Spelling- and number-insensitive form of one normalised token (``naevi`` -> ``nevus``, ``dermatoses`` -> ``dermatosis``)."""
    token = token.replace("ae", "e").replace("oe", "e")
    if token in _IRREGULAR_STEMS:
        return _IRREGULAR_STEMS[token]
    if len(token) > 4 and token.endswith(("oses", "tases")):
        return token[:-2] + "is"
    if len(token) > 3 and token.endswith("s") and not token.endswith(("ss", "us", "is", "ies")):
        return token[:-1]
    return token


def _match_tokens(text: str) -> tuple[str, ...]:
    """The stemmed tokens of ``text`` that label matching compares."""
    return tuple(_stem(token) for token in normalize(text).split())


_TAXONOMY_ROWS = _read_resource_csv("fitzpatrick17k_taxonomy.csv")
LABELS: tuple[str, ...] = tuple(row["label"] for row in _TAXONOMY_ROWS)
_NINE_GROUP = {row["label"]: row["nine_partition_label"] for row in _TAXONOMY_ROWS}
_THREE_GROUP = {row["label"]: row["three_partition_label"] for row in _TAXONOMY_ROWS}
NINE_GROUPS: tuple[str, ...] = tuple(sorted(set(_NINE_GROUP.values())))
THREE_GROUPS: tuple[str, ...] = tuple(sorted(set(_THREE_GROUP.values())))

_MERGE_ROWS = _read_resource_csv("label_merges.csv")
MERGE_REASONS: dict[str, str] = {row["label"]: row["reason"] for row in _MERGE_ROWS}
_CANONICAL = {label: label for label in LABELS} | {row["label"]: row["canonical"] for row in _MERGE_ROWS}
CANONICAL_LABELS: tuple[str, ...] = tuple(sorted(set(_CANONICAL.values())))

ALIASES: dict[str, str] = {row["alias"]: row["label"] for row in _read_resource_csv("label_aliases.csv")}

_LABEL_BY_NORMALIZED = {normalize(label): label for label in LABELS}
# Matching keys: every label and alias under its stemmed tokens. Labels are inserted last so they win a clash.
_LABEL_BY_KEY: dict[tuple[str, ...], str] = {_match_tokens(alias): label for alias, label in ALIASES.items()}
_LABEL_BY_KEY |= {_match_tokens(label): label for label in LABELS}
# Typo matching compares both the plain normalised names and their stemmed keys (a typo can change a stem).
_FUZZY_NAMES = {normalize(alias): label for alias, label in ALIASES.items()} | _LABEL_BY_NORMALIZED
_FUZZY_NAMES |= {" ".join(key): label for key, label in _LABEL_BY_KEY.items()}
_LONGEST_KEY = max(len(key) for key in _LABEL_BY_KEY)


def _known_label(label: str) -> str:
    """``label`` as spelled in ``LABELS``; a case/spacing variant of a label is accepted, anything else raises."""
    if not isinstance(label, str):
        raise TypeError(f"label must be a str, got {type(label).__name__}")
    known = _LABEL_BY_NORMALIZED.get(normalize(label))
    if known is None:
        raise ValueError(
            f"label {label!r} is not one of the {len(LABELS)} Fitzpatrick17k labels; use match_label() for free text"
        )
    return known


def nine_group(label: str) -> str:
    """The 9-way Fitzpatrick17k group of ``label`` (e.g. ``"malignant epidermal"``); raises ``ValueError`` for a non-label."""
    return _NINE_GROUP[_known_label(label)]


def three_group(label: str) -> str:
    """The 3-way group of ``label``: ``"benign"``, ``"malignant"`` or ``"non-neoplastic"``; raises for a non-label."""
    return _THREE_GROUP[_known_label(label)]


def canonical(label: str) -> str:
    """The representative of ``label``'s synonym class (``"malignant melanoma"`` -> ``"melanoma"``); itself if unmerged.

    Two labels name the same diagnosis exactly when their canonical forms are equal. Raises ``ValueError`` for a
    string that is not a label.
    """
    return _CANONICAL[_known_label(label)]


def _allowed_edits(length: int) -> int:
    """Typos tolerated when matching a key of ``length`` characters: none up to 4, one up to 9, two beyond."""
    if length <= 4:
        return 0
    return 1 if length <= 9 else 2


def _edit_distance(a: str, b: str, limit: int) -> int:
    """Optimal-string-alignment distance of ``a`` and ``b`` (insert, delete, substitute, swap), or ``limit + 1`` if above."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, start=1):
        current = [i] + [0] * len(b)
        for j, char_b in enumerate(b, start=1):
            cost = current[j - 1] + 1
            cost = min(cost, previous[j] + 1, previous[j - 1] + (char_a != char_b))
            if i > 1 and j > 1 and char_a == b[j - 2] and a[i - 2] == char_b:
                cost = min(cost, previous2[j - 2] + 1)
            current[j] = cost
        if min(current) > limit:
            return limit + 1
        previous2, previous = previous, current
    return previous[-1]


def _closest_label(queries: tuple[str, ...]) -> str | None:
    """The label of the name within its typo allowance of one of ``queries`` and strictly closest, else ``None``."""
    best_distance, best_labels = None, set()
    for candidate, label in _FUZZY_NAMES.items():
        limit = _allowed_edits(len(candidate))
        distance = min(_edit_distance(query, candidate, limit) for query in queries)
        if distance > limit:
            continue
        if best_distance is None or distance < best_distance:
            best_distance, best_labels = distance, {label}
        elif distance == best_distance:
            best_labels.add(label)
    if not best_labels or len({_CANONICAL[label] for label in best_labels}) > 1:
        return None
    return min(best_labels)


def _contained_label(tokens: tuple[str, ...]) -> str | None:
    """The label of the longest label/alias key that occurs as a run of ``tokens`` (earliest on a tie), else ``None``."""
    for width in range(min(_LONGEST_KEY, len(tokens)), 0, -1):
        for start in range(len(tokens) - width + 1):
            label = _LABEL_BY_KEY.get(tokens[start : start + width])
            if label is not None:
                return label
    return None


def match_label(text: str) -> str | None:
    """Map free text (a model's candidate diagnosis) to one of ``LABELS``, or ``None``; never raises.

    Tries, in order: the label or an alias after normalisation (case, accents, punctuation, plurals, ``ae``/``oe``
    spellings); the closest label or alias within a length-scaled typo allowance (0 edits up to 4 characters, 1 up to
    9, 2 beyond; a tie between different diagnoses gives ``None``); the longest label or alias occurring
    inside the text (``"probable pustular psoriasis of the palms"`` -> ``"pustular psoriasis"``). Only the first 40
    words are read.

    Args:
        text: free text, e.g. ``"Granuloma, pyogenic"`` or ``"melanomas"``.

    Returns:
        the label as spelled in ``LABELS`` (not merged: apply ``canonical`` to compare diagnoses), or ``None``.
    """
    return _match_text(text) if isinstance(text, str) else None


@functools.lru_cache(maxsize=65536)
def _match_text(text: str) -> str | None:
    """``match_label`` for a str, cached (reward functions see the same candidates many times)."""
    words = normalize(text).split()[:_MAX_MATCH_TOKENS]
    tokens = tuple(_stem(word) for word in words)
    if not tokens:
        return None
    exact = _LABEL_BY_KEY.get(tokens)
    if exact is not None:
        return exact
    return _closest_label((" ".join(words), " ".join(tokens))) or _contained_label(tokens)
