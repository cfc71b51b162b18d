"""The Stage I caption format and the Stage II ranked-diagnosis format: prompts, formatters and parsers that never raise.

A caption is twelve ``field: value`` lines in the fixed order of ``CAPTION_FIELDS``; a value is free text, usually one
or more terms of ``FIELD_VALUES[field]`` joined by ``", "``, and empty when the field does not apply::

    color: red, brown
    location: forearm
    ...
    other:

A diagnosis answer is a numbered list, most likely first::

    1. psoriasis
    2. eczema

Model output is adversarial, so the parsers (``parse_caption``, ``parse_diagnoses``) and the text helpers
(``normalize_value``, ``split_values``) accept any value and never raise on it:

- a value that is not a ``str`` (``None``, bytes, numbers, containers, any object) is unparseable: an empty caption,
  ``[]`` or ``""``; nothing of it is read (not even its ``str()``);
- only the first ``MAX_TEXT_CHARS`` (100 000) characters of a text are read, and the time is linear in them;
- control characters other than whitespace (NUL, ESC, DEL, C1), terminal escape sequences, Unicode format characters
  (bidi marks and isolates such as U+202E, zero-width space and joiners, soft hyphen, BOM) and lone surrogates are
  removed before anything is matched, so ``"co\u200blor: r\x00ed"`` reads as ``color: red``; every line break that
  ``str.splitlines`` knows (``\r\n``, ``\r``, U+2028, ...) counts as a line break;
- a JSON answer nested too deeply to decode is read as text.
"""

import json
import operator
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import NamedTuple

from skinflow.taxonomy import LABELS, _as_text, _strip_invisible, canonical, match_label

__all__ = [
    "CAPTION_FIELDS",
    "CAPTION_PROMPT",
    "CaptionReading",
    "DiagnosisMatch",
    "DEFAULT_K",
    "DIAGNOSIS_PROMPT",
    "FIELD_VALUES",
    "MAX_TEXT_CHARS",
    "SKINCON_CONCEPTS",
    "diagnosis_prompt",
    "format_caption",
    "format_diagnoses",
    "normalize_value",
    "parse_caption",
    "parse_diagnoses",
    "parse_diagnosis_matches",
    "read_caption",
    "split_values",
]

CAPTION_FIELDS: tuple[str, ...] = (
    "color",
    "location",
    "shape",
    "lesion_type",
    "number",
    "size",
    "texture",
    "border",
    "surface",
    "distribution",
    "surrounding",
    "other",
)

FIELD_VALUES: dict[str, tuple[str, ...]] = {
    "color": (
        "red", "pink", "salmon", "orange", "yellow", "brown", "tan", "black", "blue", "gray", "purple",
        "violaceous", "white", "skin-colored", "pigmented", "hyperpigmented", "hypopigmented", "depigmented",
        "translucent", "pearly",
    ),
    "location": (
        "scalp", "face", "forehead", "eyelid", "cheek", "nose", "ear", "lip", "mouth", "chin", "neck", "chest",
        "breast", "back", "abdomen", "trunk", "flank", "axilla", "groin", "genitals", "buttock", "shoulder", "arm",
        "elbow", "forearm", "wrist", "hand", "palm", "finger", "nail", "thigh", "knee", "leg", "shin", "ankle",
        "foot", "sole", "toe", "skin fold", "mucosa", "generalized",
    ),
    "shape": (
        "round", "oval", "annular", "arcuate", "polycyclic", "irregular", "linear", "serpiginous", "polygonal",
        "targetoid", "nummular", "dome-shaped", "flat-topped", "pedunculated", "exophytic", "umbilicated",
        "acuminate",
    ),
    "lesion_type": (
        "macule", "patch", "papule", "plaque", "nodule", "vesicle", "bulla", "pustule", "abscess", "wheal", "cyst",
        "comedo", "burrow", "ulcer", "scar", "purpura", "tumor",
    ),
    "number": ("single", "few", "multiple", "numerous"),
    "size": ("pinpoint", "small", "medium", "large", "very large"),
    "texture": (
        "smooth", "rough", "soft", "firm", "hard", "indurated", "sclerotic", "atrophic", "lichenified", "dry",
        "friable", "thickened", "velvety",
    ),
    "border": ("well-defined", "ill-defined", "regular", "irregular", "raised", "rolled", "scalloped"),
    "surface": (
        "smooth", "shiny", "scaly", "crusted", "eroded", "ulcerated", "exudative", "fissured", "excoriated",
        "warty", "keratotic", "telangiectatic",
    ),
    "distribution": (
        "localized", "generalized", "scattered", "grouped", "confluent", "linear", "dermatomal", "symmetric",
        "asymmetric", "unilateral", "bilateral", "follicular", "acral", "flexural", "extensor", "sun-exposed",
        "intertriginous", "reticular",
    ),
    "surrounding": (
        "normal skin", "erythema", "edema", "halo", "hyperpigmentation", "hypopigmentation", "scarring",
        "satellite lesions", "telangiectasia", "atrophy",
    ),
    "other": ("telangiectasia", "poikiloderma", "hair loss", "bleeding", "nail changes", "koebner phenomenon"),
}

SKINCON_CONCEPTS: dict[str, tuple[str, str]] = {
    "Vesicle": ("lesion_type", "vesicle"),
    "Papule": ("lesion_type", "papule"),
    "Macule": ("lesion_type", "macule"),
    "Plaque": ("lesion_type", "plaque"),
    "Abscess": ("lesion_type", "abscess"),
    "Pustule": ("lesion_type", "pustule"),
    "Bulla": ("lesion_type", "bulla"),
    "Patch": ("lesion_type", "patch"),
    "Nodule": ("lesion_type", "nodule"),
    "Ulcer": ("lesion_type", "ulcer"),
    "Crust": ("surface", "crusted"),
    "Erosion": ("surface", "eroded"),
    "Excoriation": ("surface", "excoriated"),
    "Atrophy": ("texture", "atrophic"),
    "Exudate": ("surface", "exudative"),
    "Purpura/Petechiae": ("lesion_type", "purpura"),
    "Fissure": ("surface", "fissured"),
    "Induration": ("texture", "indurated"),
    "Xerosis": ("texture", "dry"),
    "Telangiectasia": ("other", "telangiectasia"),
    "Scale": ("surface", "scaly"),
    "Scar": ("lesion_type", "scar"),
    "Friable": ("texture", "friable"),
    "Sclerosis": ("texture", "sclerotic"),
    "Pedunculated": ("shape", "pedunculated"),
    "Exophytic/Fungating": ("shape", "exophytic"),
    "Warty/Papillomatous": ("surface", "warty"),
    "Dome-shaped": ("shape", "dome-shaped"),
    "Flat topped": ("shape", "flat-topped"),
    "Brown(Hyperpigmentation)": ("color", "brown"),
    "Translucent": ("color", "translucent"),
    "White(Hypopigmentation)": ("color", "white"),
    "Purple": ("color", "purple"),
    "Yellow": ("color", "yellow"),
    "Black": ("color", "black"),
    "Erythema": ("color", "red"),
    "Comedo": ("lesion_type", "comedo"),
    "Lichenification": ("texture", "lichenified"),
    "Blue": ("color", "blue"),
    "Umbilicated": ("shape", "umbilicated"),
    "Poikiloderma": ("other", "poikiloderma"),
    "Salmon": ("color", "salmon"),
    "Wheal": ("lesion_type", "wheal"),
    "Acuminate": ("shape", "acuminate"),
    "Burrow": ("lesion_type", "burrow"),
    "Gray": ("color", "gray"),
    "Pigmented": ("color", "pigmented"),
    "Cyst": ("lesion_type", "cyst"),
}

DEFAULT_K = 6

# The parsers and text helpers read at most this many characters of a text (about 25 000 tokens, far more than any
# answer the prompts ask for); the rest is ignored. This bounds their time on any input.
MAX_TEXT_CHARS = 100_000

CAPTION_PROMPT = (
    "Describe the skin lesion in the image. Answer with these 12 lines in this order, one 'field: value' per line, "
    "and leave a value empty when it does not apply:\n" + "\n".join(f"{field.replace('_', ' ')}:" for field in CAPTION_FIELDS)
)


def _as_count(k: object) -> int | None:
    """``k`` as an int when it is an integer (``int``, numpy integer, ...) other than a bool, else ``None``."""
    if isinstance(k, bool):
        return None
    try:
        return operator.index(k)
    except TypeError:
        return None


def diagnosis_prompt(k: int = DEFAULT_K) -> str:
    """The Stage II user instruction asking for ``k`` ranked diagnoses as a numbered list."""
    count = _as_count(k)
    if count is None or count < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    k = count
    return (
        f"What is the diagnosis? List the {k} most likely diagnoses, most likely first, "
        f"as a numbered list with one diagnosis per line:\n1. ...\n2. ..."
    )


DIAGNOSIS_PROMPT = diagnosis_prompt(DEFAULT_K)

_EMPTY_VALUES = frozenset({"none", "n/a", "na", "null", "nil", "-", "not applicable", "empty"})
_VALUE_EDGE_JUNK = " \t*_`'\"“”‘’,;|{}[]<>#"
_FIELD_ALIASES = {
    "color": ("colour", "colors", "colours", "pigmentation"),
    "location": ("locations", "site", "body site", "anatomical site", "anatomic site", "body location"),
    "shape": ("shapes", "configuration"),
    "lesion_type": ("lesion type", "lesion types", "type", "lesion", "morphology", "primary lesion"),
    "number": ("count", "number of lesions", "quantity"),
    "size": ("sizes", "diameter"),
    "texture": ("textures", "consistency", "palpation"),
    "border": ("borders", "margin", "margins", "edge", "edges"),
    "surface": ("surface changes", "surfaces"),
    "distribution": ("pattern", "arrangement"),
    "surrounding": ("surroundings", "surrounding skin", "surrounding area", "periphery"),
    "other": ("others", "other findings", "notes", "additional", "additional findings"),
}
_FIELD_BY_NAME = {field.replace("_", " "): field for field in CAPTION_FIELDS} | {
    alias: field for field, aliases in _FIELD_ALIASES.items() for alias in aliases
}
_FIELD_NAME_PATTERN = "|".join(
    re.escape(name).replace(r"\ ", "[ _-]+") for name in sorted(_FIELD_BY_NAME, key=len, reverse=True)
)
# A field name at the start of a line or after a separator, optionally in markdown/JSON dress, then ':' or '='.
# No two quantifiers that can meet the same character are adjacent, and "*+" is avoided (Python 3.10 has no
# possessive quantifiers), so that degenerate output (thousands of spaces or bullets) still parses in linear time.
_KEY_DRESS = "[ \\t*_`'\"#>+•-]*"
_FIELD_KEY = re.compile(
    rf"(?:^|(?<=[\n;|,{{])){_KEY_DRESS}(?:\d{{1,3}}[.)]{_KEY_DRESS})?"
    rf"(?P<name>{_FIELD_NAME_PATTERN})[ \t*_`'\"]*[:=][*_`'\"]*",
    re.IGNORECASE,
)
_THINK_BLOCK = re.compile(r"<think>.*?(?:</think>|\Z)", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"</?[A-Za-z_][\w-]*>")
# Every line break of str.splitlines, so that captions (split at "\n") and diagnoses (splitlines) agree.
_LINE_BREAK = re.compile("\r\n?|[\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


def _normalized(text: str) -> str:
    """``text`` (a plain str) cut to ``MAX_TEXT_CHARS``, without invisible characters, NFKC-normalised (and cut again:
    NFKC can lengthen a text)."""
    return unicodedata.normalize("NFKC", _strip_invisible(text[:MAX_TEXT_CHARS]))[:MAX_TEXT_CHARS]


def _clean_text(text: str) -> str:
    """``_normalized`` text with one kind of line break, without ``<think>`` blocks and with other XML-like tags
    turned into line breaks."""
    text = _LINE_BREAK.sub("\n", _normalized(text))
    return _TAG.sub("\n", _THINK_BLOCK.sub("\n", text))


def normalize_value(value: str) -> str:
    """Canonical form of one field value: NFKC, lower case, one line, single spaces, no edge punctuation/markdown.

    Control, format (bidi, zero-width) and surrogate characters are removed. Placeholders for "nothing" (``none``,
    ``n/a``, ``null``, ``-``, ...) become ``""``; so does any value that is not a ``str``. Never raises.
    """
    plain = _as_text(value)
    if plain is None:
        return ""
    # NFKC again after casefold (which can undo it, e.g. "ß" + accent), and one strip of junk and dots together:
    # normalize_value(normalize_value(v)) == normalize_value(v), so a formatted caption parses back to its values.
    folded = unicodedata.normalize("NFKC", _normalized(plain).casefold())
    text = " ".join(folded.split()).strip(_VALUE_EDGE_JUNK + ".")
    return "" if text in _EMPTY_VALUES else text


def split_values(value: str) -> list[str]:
    """The individual terms of a field value: ``"red, brown and tan"`` -> ``["red", "brown", "tan"]``; never raises.

    A value that is not a ``str`` has no terms (``[]``).
    """
    plain = _as_text(value)
    if plain is None:
        return []
    parts = re.split(r",|;|/|\band\b|\bor\b|\+|&", _normalized(plain))
    terms = (normalize_value(part) for part in parts)
    return list(dict.fromkeys(term for term in terms if term))


def format_caption(caption: Mapping[str, str | Sequence[str]]) -> str:
    """Render a caption as twelve ``field: value`` lines in ``CAPTION_FIELDS`` order.

    Args:
        caption: field -> value or sequence of values; missing fields are written empty. Keys must be among
            ``CAPTION_FIELDS``. Values are passed through ``normalize_value``; a sequence is joined with ``", "``.

    Returns:
        the caption text, e.g. ``"color: red, brown\\nlocation: forearm\\n...\\nother:"``;
        ``parse_caption`` of it gives back the normalised values.
    """
    if not isinstance(caption, Mapping):
        raise TypeError(f"caption must be a mapping of field -> value, got {type(caption).__name__}")
    unknown = sorted(set(caption) - set(CAPTION_FIELDS))
    if unknown:
        raise ValueError(f"caption has unknown fields {unknown}; allowed: {CAPTION_FIELDS}")
    lines = []
    for field in CAPTION_FIELDS:
        value = caption.get(field, "")
        if isinstance(value, str):
            text = normalize_value(value)
        elif isinstance(value, Sequence) and all(isinstance(item, str) for item in value):
            text = ", ".join(term for term in (normalize_value(item) for item in value) if term)
        else:
            raise TypeError(f"caption[{field!r}] must be a str or a sequence of str, got {value!r}")
        lines.append(f"{field.replace('_', ' ')}: {text}".rstrip())
    return "\n".join(lines)


def _field_of(name: str) -> str | None:
    """The caption field named by a key such as ``"Lesion-Type"`` or ``"colour"``, or ``None``."""
    return _FIELD_BY_NAME.get(" ".join(re.sub(r"[_-]+", " ", name.casefold()).split()))


_JSON_SCALARS = (str, int, float)  # bool is an int


def _caption_from_json(text: str) -> dict[str, str]:
    """Fields of the first JSON object in ``text`` (scalars, and lists of scalars joined with ``", "``), or ``{}``.

    Nested objects and lists inside a value are ignored; JSON nested too deeply for the decoder gives ``{}``.
    """
    start = text.find("{")
    if start < 0:
        return {}
    try:
        data, _ = json.JSONDecoder().raw_decode(text, start)
    except (ValueError, RecursionError):
        return {}
    if not isinstance(data, dict):
        return {}
    found = {}
    for key, value in data.items():
        field = _field_of(key)
        if field is None or field in found:
            continue
        items = value if isinstance(value, list) else [value]
        terms = (normalize_value(str(item)) for item in items if isinstance(item, _JSON_SCALARS))
        found[field] = ", ".join(term for term in terms if term)
    return found


def parse_caption(text: str) -> dict[str, str]:
    """Read a caption back from model output; never raises.

    Accepts the ``format_caption`` layout and its usual variants: any case, markdown bullets and bold, numbering,
    ``=`` instead of ``:``, several fields on one line separated by ``;``/``|``/``,``, field aliases (``colour``,
    ``site``, ``margin``, ...), JSON objects, ``<think>`` blocks (ignored), missing, extra or truncated lines. The first
    occurrence of a repeated field wins; unknown keys are ignored. Invisible characters are removed first and only
    the first ``MAX_TEXT_CHARS`` characters are read (see the module docstring).

    Args:
        text: the model's answer; any other value than a ``str`` gives the empty caption.

    Returns:
        a dict with every field of ``CAPTION_FIELDS`` (in order), each value normalised by ``normalize_value``
        (``""`` when missing or empty).
    """
    caption = dict.fromkeys(CAPTION_FIELDS, "")
    plain = _as_text(text)
    if plain is None:
        return caption
    text = _clean_text(plain)
    found = _caption_from_json(text)
    matches = list(_FIELD_KEY.finditer(text))
    for match, following in zip(matches, [*matches[1:], None]):
        field = _field_of(match.group("name"))
        if field is None or field in found:
            continue
        end = following.start() if following is not None else len(text)
        found[field] = normalize_value(text[match.end() : end].split("\n", 1)[0])
    caption.update(found)
    return caption


def format_diagnoses(labels: Sequence[str]) -> str:
    """Render ranked diagnoses as a numbered list, most likely first.

    Args:
        labels: diagnoses in rank order, e.g. ``["psoriasis", "eczema"]``.

    Returns:
        ``"1. psoriasis\\n2. eczema"``; ``parse_diagnoses`` of it gives back the normalised, de-duplicated labels.
    """
    if isinstance(labels, str) or not isinstance(labels, Sequence):
        raise TypeError(f"labels must be a sequence of str, got {type(labels).__name__}")
    lines = []
    for rank, label in enumerate(labels, start=1):
        if not isinstance(label, str):
            raise TypeError(f"labels[{rank - 1}] must be a str, got {type(label).__name__}")
        lines.append(f"{rank}. {_clean_entry(label)}")
    return "\n".join(lines)


_ENUMERATOR = re.compile(
    r"^\s*(?:[-*+•>]+|\(?#?\d{1,2}\s*[.):\]]|\(\d{1,2}\)|#\d{1,2}|top[ -]?\d{1,2}\s*[:.)-]?)\s*", re.IGNORECASE
)
_INLINE_ENUMERATOR = re.compile(r"(?:^|\s)\(?\d{1,2}[.)]\s+")
_ENTRY_PREFIX = re.compile(
    r"^(?:diagnosis|diagnoses|dx|ddx|candidate|answer|differential)(?:\s*\d+)?\s*[:=-]\s*", re.IGNORECASE
)
# A tail starts only at the end of a word (never inside a run of spaces or digits), which keeps the search linear.
_ENTRY_TAIL = re.compile(r"(?<!\s)\s*(?:\(|\[|(?<=\s)[-–—]\s|:|;|\bwith\s+\d|(?<![\d.])\d+(?:\.\d+)?\s*%).*$")


def _clean_entry(entry: str) -> str:
    """One diagnosis without list markers, ``Diagnosis:`` prefixes, trailing comments or scores, normalised."""
    entry = _ENUMERATOR.sub("", entry, count=1)
    entry = _ENTRY_PREFIX.sub("", entry.strip(" *_`'\""), count=1)
    return normalize_value(_ENTRY_TAIL.sub("", entry.strip(" *_`'\"")))


def _diagnosis_entries(text: str) -> list[str]:
    """The raw entries of a ranked answer: list items if any line is one, else the comma/semicolon-separated items."""
    lines = [line for line in text.splitlines() if line.strip()]
    listed = [line for line in lines if _ENUMERATOR.match(line)]
    if len(listed) == 1 and len(_INLINE_ENUMERATOR.findall(listed[0])) > 1:
        return [part for part in _INLINE_ENUMERATOR.split(listed[0]) if part.strip()]
    if listed:
        return listed
    if len(lines) == 1 and len(_INLINE_ENUMERATOR.findall(lines[0])) > 1:
        return [part for part in _INLINE_ENUMERATOR.split(lines[0]) if part.strip()]
    body = [line for line in lines if not line.rstrip().endswith(":")]
    if len(body) == 1:
        return re.split(r"[,;]|\s>\s", body[0])
    return body


def parse_diagnoses(text: str, k: int | None = None) -> list[str]:
    """Read a ranked diagnosis list back from model output; never raises on any ``text``.

    Accepts numbered lists (``1.``, ``1)``, ``(1)``, ``#1``, ``Top-1:``), bullets, one numbered line
    (``1. a 2. b``), comma/semicolon-separated lists, preambles ending in ``:``, ``<think>`` blocks (ignored) and
    trailing comments (``psoriasis (most likely, 70%)``). Entries are normalised with ``normalize_value``; an entry
    naming the same diagnosis as an earlier one (same text, or same canonical label via ``taxonomy.match_label``) is
    dropped. Entries are kept as text so that unknown diagnoses still hold their rank. Invisible characters are
    removed first and only the first ``MAX_TEXT_CHARS`` characters are read (see the module docstring).

    Args:
        text: the model's answer; any other value than a ``str`` gives ``[]``.
        k: keep at most the first ``k`` entries (after de-duplication); ``None`` keeps all.

    Returns:
        the diagnoses in rank order, e.g. ``["psoriasis", "eczema"]``.

    Raises:
        ValueError: ``k`` is not ``None`` or an integer >= 0 (an argument of the caller, not model output).
    """
    return [candidate.entry for candidate in parse_diagnosis_matches(text, k)]


# --- Readers for the rewards: which fields an answer states, how closely it keeps the layout, and the label each
# --- ranked candidate matched (so that rewards match every candidate once).

_FORMAT_NAMES = {field.replace("_", " "): field for field in CAPTION_FIELDS} | {field: field for field in CAPTION_FIELDS}
_FIELD_INDEX = {field: index for index, field in enumerate(CAPTION_FIELDS)}
# One line of the exact layout: a schema field name (``lesion type`` or ``lesion_type``, any case), ``:``, then a value
# in which parse_caption finds no other field (checked separately).
_FORMAT_LINE = re.compile(
    r"[ \t]*(?P<name>" + "|".join(re.escape(name) for name in sorted(_FORMAT_NAMES, key=len, reverse=True))
    + r")[ \t]*:(?P<value>.*)",
    re.IGNORECASE,
)


class CaptionReading(NamedTuple):
    """What :func:`read_caption` reads from an answer.

    Attributes:
        stated: the fields the answer states, in ``CAPTION_FIELDS`` order, each normalised by ``normalize_value``
            (``""`` for a field stated empty, e.g. ``"shape:"``); a field the answer does not mention is absent.
        format_lines: the lines in the exact layout (``field: value`` with a schema field name and no other field on
            the line), counted in schema order: a line counts only when its field comes after the field of the previous
            counted line, so a repeated or out-of-order field does not count.
        lines: the non-empty lines of the answer (after ``<think>`` blocks are removed and tags become line breaks).
    """

    stated: dict[str, str]
    format_lines: int
    lines: int


def _stated_fields(text: str) -> dict[str, str]:
    """The fields stated in a ``_clean_text`` text, read as ``parse_caption`` reads them."""
    found = _caption_from_json(text)
    matches = list(_FIELD_KEY.finditer(text))
    for match, following in zip(matches, [*matches[1:], None]):
        name = match.group("name")
        field = _FIELD_BY_NAME.get(name.lower()) or _field_of(name)
        if field is None or field in found:
            continue
        end = following.start() if following is not None else len(text)
        found[field] = normalize_value(text[match.end() : end].split("\n", 1)[0])
    return {field: found[field] for field in CAPTION_FIELDS if field in found}


def read_caption(text: str) -> CaptionReading:
    """Read a caption and its layout from model output; never raises.

    ``stated`` holds the same values as ``parse_caption(text)`` but only for the fields the answer mentions, so that
    a field stated empty (``"shape:"``) can be told from a field left out. ``format_lines`` and ``lines`` measure how
    closely the answer keeps the twelve-line ``field: value`` layout of ``format_caption`` (which gives
    ``format_lines == lines == 12``). Any other value than a ``str`` reads as ``CaptionReading({}, 0, 0)``.
    """
    plain = _as_text(text)
    if plain is None:
        return CaptionReading({}, 0, 0)
    text = _clean_text(plain)
    format_lines = lines = 0
    last = -1
    for line in text.split("\n"):
        if not line or line.isspace():
            continue
        lines += 1
        match = _FORMAT_LINE.fullmatch(line)
        if match is None:
            continue
        value = match.group("value")
        if (":" in value or "=" in value) and _FIELD_KEY.search(value) is not None:
            continue  # a second field on the line
        # re's case folding also takes a few non-ASCII letters (dotless i) for ASCII ones: those names do not count.
        field = _FORMAT_NAMES.get(match.group("name").casefold())
        if field is not None and _FIELD_INDEX[field] > last:
            format_lines += 1
            last = _FIELD_INDEX[field]
    return CaptionReading(_stated_fields(text), format_lines, lines)


_CANONICAL_OF = {label: canonical(label) for label in LABELS}


class DiagnosisMatch(NamedTuple):
    """One distinct candidate of a ranked answer, as :func:`parse_diagnosis_matches` reads it.

    Attributes:
        entry: the candidate as written (normalised), e.g. ``"possible psoriasis"``.
        label: the label it matches (one of ``LABELS``) or ``None``.
        labels: every label that this entry and the later entries dropped as repeats of it name (the same
            diagnosis, possibly under other labels: ``{"basal cell carcinoma morpheiform", "basal cell carcinoma"}``);
            empty when ``label`` is ``None``.
    """

    entry: str
    label: str | None
    labels: frozenset[str]


def parse_diagnosis_matches(
    text: str, k: int | None = None, match: Callable[[str], str | None] | None = None
) -> list[DiagnosisMatch]:
    """``parse_diagnoses`` that also returns the label each candidate matched; never raises on any ``text``.

    The entries are read as ``parse_diagnoses`` reads them, and each is matched once with ``match`` (default
    ``taxonomy.match_label``); an entry is dropped when it names the same diagnosis as an earlier one (the same
    canonical label, or the same text when it matches no label), and the label it names is added to the earlier
    one's ``labels``.

    Args:
        text: the model's answer; any other value than a ``str`` gives ``[]``.
        k: keep at most the first ``k`` distinct entries (entries after the ``k``-th are not read); ``None`` keeps
            all.
        match: free text -> one of ``LABELS`` or ``None``; it must never raise.

    Returns:
        the :class:`DiagnosisMatch` of each distinct candidate in rank order, e.g.
        ``[DiagnosisMatch("possible psoriasis", "psoriasis", frozenset({"psoriasis"})), ...]``.

    Raises:
        ValueError: ``k`` is not ``None`` or an integer >= 0 (an argument of the caller, not model output).
    """
    if k is not None:
        count = _as_count(k)
        if count is None or count < 0:
            raise ValueError(f"k must be None or an int >= 0, got {k!r}")
        k = count
    plain = _as_text(text)
    if plain is None:
        return []
    return distinct_matches((_clean_entry(raw) for raw in _diagnosis_entries(_clean_text(plain))), k, match)


def distinct_matches(
    entries: Iterable[str], k: int | None = None, match: Callable[[str], str | None] | None = None
) -> list[DiagnosisMatch]:
    """The first ``k`` distinct candidates among cleaned ``entries`` (empty ones skipped), in order, with their
    labels: an entry naming the same diagnosis as an earlier one (the same canonical label through ``match``, default
    ``taxonomy.match_label``; else the same text) is dropped, its label added to the earlier candidate's ``labels``.
    ``entries`` is read lazily: nothing after the ``k``-th distinct candidate is matched."""
    match = match_label if match is None else match
    index_of: dict[str, int] = {}
    ranked: list[tuple[str, str | None, set[str]]] = []
    for entry in entries:
        if k is not None and len(ranked) >= k:
            break
        if not entry:
            continue
        label = match(entry)
        label = label if label in _CANONICAL_OF else None
        identity = "\x00" + _CANONICAL_OF[label] if label is not None else entry
        if identity in index_of:
            if label is not None:
                ranked[index_of[identity]][2].add(label)
            continue
        index_of[identity] = len(ranked)
        ranked.append((entry, label, {label} if label is not None else set()))
    return [DiagnosisMatch(entry, label, frozenset(labels)) for entry, label, labels in ranked]
