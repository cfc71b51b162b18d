"""The Fitzpatrick17k taxonomy: 114 labels, their 9-way and 3-way groups, synonym merging and free-text matching.

The label table is package data (``skinflow/resources/fitzpatrick17k_taxonomy.csv``, derived from the Fitzpatrick17k
metadata, CC BY-NC-SA 3.0; see ``skinflow/resources/NOTICE.md``). ``label_merges.csv`` lists the labels that name the
same disease as another label (or a subtype the other label already holds) with the reason for each merge, and
``label_aliases.csv`` maps other clinical names of a label (``"hives"``, ``"bcc"``, ``"morphea"``) onto it.
"""

import functools
import re
import sys
import unicodedata

from rapidfuzz import process
from rapidfuzz.distance import OSA

from skinflow.util import read_resource_records

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
# match_label reads at most this many characters (then the first _MAX_MATCH_TOKENS words of them) and caches only
# texts up to _MAX_CACHED_CHARS, so that neither its time nor its cache grows with the input.
_MAX_MATCH_CHARS = 2_000
_MAX_CACHED_CHARS = 256
_APOSTROPHES = "'\u2019\u2018`\u00b4"
_IRREGULAR_STEMS = {"nevi": "nevus", "milium": "milia"}


def _character_class(code_points: list[int]) -> str:
    """A regex character class matching exactly ``code_points`` (sorted)."""
    ranges: list[list[int]] = []
    for c in code_points:
        if ranges and ranges[-1][1] == c - 1:
            ranges[-1][1] = c
        else:
            ranges.append([c, c])
    return "[" + "".join(f"\\U{a:08x}-\\U{b:08x}" if a != b else f"\\U{a:08x}" for a, b in ranges) + "]"


def _scan_unicode() -> tuple[list[int], list[int]]:
    """The format characters (category Cf: bidi marks and isolates, zero-width space and joiners, soft hyphen, BOM,
    tags) and the combining marks of the running Python's Unicode database; both exist only in planes 0, 1 and 14."""
    formats, combining = [], []
    for c in (*range(0x20000), *range(0xE0000, 0xF0000)):
        ch = chr(c)
        if unicodedata.combining(ch):
            combining.append(c)
        elif unicodedata.category(ch) == "Cf":
            formats.append(c)
    return formats, combining


_FORMAT_CHARS, _COMBINING_CHARS = _scan_unicode()
# Invisible: the controls other than whitespace (NUL, ESC, DEL, C1; tab and line breaks stay), the format characters
# and the surrogates. An ANSI/VT escape sequence (CSI: ESC [ params intermediates final) goes whole; its three
# character classes are disjoint, so the match is linear.
_INVISIBLE = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]|"
    + _character_class(
        sorted(
            [c for c in (*range(0x20), *range(0x7F, 0xA0)) if not chr(c).isspace()]
            + _FORMAT_CHARS
            + list(range(0xD800, 0xE000))
        )
    )
)
# What normalize() deletes after NFKD: apostrophes and combining marks (accents). Astral code points in a character
# class are tested one range at a time, so the few astral combining marks are looked at only for astral characters;
# the BMP part is a bitmap.
_DELETED = re.compile(
    _character_class(sorted({ord(ch) for ch in _APOSTROPHES} | {c for c in _COMBINING_CHARS if c <= 0xFFFF}))
    + "+|(?=[\\U00010000-\\U0010ffff])"
    + _character_class([c for c in _COMBINING_CHARS if c > 0xFFFF])
    + "+"
)
del _FORMAT_CHARS, _COMBINING_CHARS


def _as_text(value: object, limit: int = sys.maxsize) -> str | None:
    """``value`` as a plain ``str`` (a ``str`` subclass is copied, so none of its overrides run), cut to its first
    ``limit`` characters; ``None`` when ``value`` is not a ``str``."""
    if not issubclass(type(value), str):  # type(), not isinstance(): an object can fake its __class__
        return None
    return str.__str__(value)[:limit]


def _strip_invisible(text: str) -> str:
    """``text`` without control, format (bidi, zero-width), surrogate characters and terminal escape sequences.

    Whitespace controls (tab, line breaks) are kept. Used by every text normalisation here and in ``formats``, so
    that ``"co\\u200blor"`` reads as ``"color"`` and ``"pso\\x00riasis"`` as ``"psoriasis"``.
    """
    return _INVISIBLE.sub("", text)


# Neither alphanumeric nor whitespace: \w is exactly str.isalnum() or "_", \s exactly str.isspace().
_PUNCTUATION = re.compile(r"[^\w\s]+|_+")


def normalize(text: str) -> str:
    """Lower-case ``text``, strip accents and apostrophes, turn every other non-alphanumeric run into one space.

    Control, format (bidi, zero-width, soft hyphen) and surrogate characters are removed first, so that they cannot
    split or hide a word (``"pso\\u200briasis"`` -> ``"psoriasis"``). Linear in ``len(text)``.

    Args:
        text: any string, e.g. ``"Behçet's  Disease"``.

    Returns:
        the normalised string, e.g. ``"behcets disease"``; ``""`` when nothing alphanumeric is left.

    Raises:
        TypeError: ``text`` is not a ``str``.
    """
    plain = _as_text(text)
    if plain is None:
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    decomposed = _DELETED.sub("", unicodedata.normalize("NFKD", _strip_invisible(plain)))
    return " ".join(_PUNCTUATION.sub(" ", decomposed.casefold()).split())


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


_TAXONOMY_ROWS = read_resource_records("fitzpatrick17k_taxonomy.csv")
LABELS: tuple[str, ...] = tuple(row["label"] for row in _TAXONOMY_ROWS)
_NINE_GROUP = {row["label"]: row["nine_partition_label"] for row in _TAXONOMY_ROWS}
_THREE_GROUP = {row["label"]: row["three_partition_label"] for row in _TAXONOMY_ROWS}
NINE_GROUPS: tuple[str, ...] = tuple(sorted(set(_NINE_GROUP.values())))
THREE_GROUPS: tuple[str, ...] = tuple(sorted(set(_THREE_GROUP.values())))

_MERGE_ROWS = read_resource_records("label_merges.csv")
MERGE_REASONS: dict[str, str] = {row["label"]: row["reason"] for row in _MERGE_ROWS}
_CANONICAL = {label: label for label in LABELS} | {row["label"]: row["canonical"] for row in _MERGE_ROWS}
CANONICAL_LABELS: tuple[str, ...] = tuple(sorted(set(_CANONICAL.values())))

ALIASES: dict[str, str] = {row["alias"]: row["label"] for row in read_resource_records("label_aliases.csv")}

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
    plain = _as_text(label)
    if plain is None:
        raise TypeError(f"label must be a str, got {type(label).__name__}")
    known = _LABEL_BY_NORMALIZED.get(normalize(plain))
    if known is None:
        shown = repr(plain) if len(plain) <= 200 else repr(plain[:200]) + f"... ({len(plain)} characters)"
        raise ValueError(
            f"label {shown} is not one of the {len(LABELS)} Fitzpatrick17k labels; use match_label() for free text"
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


# The fuzzy names by typo allowance: the names matched only exactly, then (allowance, names) for the others.
_FUZZY_EXACT = frozenset(name for name in _FUZZY_NAMES if _allowed_edits(len(name)) == 0)
_FUZZY_BY_ALLOWANCE = tuple(
    (allowance, [name for name in _FUZZY_NAMES if _allowed_edits(len(name)) == allowance]) for allowance in (1, 2)
)


def _closest_label(queries: tuple[str, ...]) -> str | None:
    """The label of the name within its typo allowance of one of ``queries`` and strictly closest, else ``None``.

    The distance is the optimal-string-alignment distance (insert, delete, substitute, swap adjacent characters),
    computed by rapidfuzz with the allowance as cutoff, so a long query costs no more than a short one.
    """
    distances: dict[str, int] = {}
    for query in dict.fromkeys(queries):
        if query in _FUZZY_EXACT:
            distances[query] = 0
        for allowance, names in _FUZZY_BY_ALLOWANCE:
            for name, distance, _ in process.extract(
                query, names, scorer=OSA.distance, score_cutoff=allowance, limit=None
            ):
                distances[name] = min(distance, distances.get(name, distance))
    if not distances:
        return None
    best = min(distances.values())
    best_labels = {_FUZZY_NAMES[name] for name, distance in distances.items() if distance == best}
    if len({_CANONICAL[label] for label in best_labels}) > 1:
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
    words of the first 2 000 characters are read, so any input costs bounded time. Control, format (bidi,
    zero-width) and surrogate characters are ignored (see ``normalize``).

    Args:
        text: free text, e.g. ``"Granuloma, pyogenic"`` or ``"melanomas"``; any other value (``None``, bytes, a
            number, ...) gives ``None``.

    Returns:
        the label as spelled in ``LABELS`` (not merged: apply ``canonical`` to compare diagnoses), or ``None``.
    """
    plain = _as_text(text, _MAX_MATCH_CHARS)
    if plain is None:
        return None
    return _match_cached(plain) if len(plain) <= _MAX_CACHED_CHARS else _match_text(plain)


def _match_text(text: str) -> str | None:
    """``match_label`` for a plain str of at most ``_MAX_MATCH_CHARS`` characters."""
    words = normalize(text).split()[:_MAX_MATCH_TOKENS]
    tokens = tuple(_stem(word) for word in words)
    if not tokens:
        return None
    exact = _LABEL_BY_KEY.get(tokens)
    if exact is not None:
        return exact
    return _closest_label((" ".join(words), " ".join(tokens))) or _contained_label(tokens)


# Reward functions see the same candidates many times; long texts are not cached (bounded memory).
_match_cached = functools.lru_cache(maxsize=65536)(_match_text)
