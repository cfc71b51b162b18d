"""Caption terms onto the schema vocabulary: the term synonyms, plurals, hyphens and typos of Stage I.

A caption value is split into terms (:func:`split_terms`), and each term of a field is mapped onto that field's
vocabulary ``formats.FIELD_VALUES[field]`` (:func:`map_term`):

1. exact lookup of the term's key (lower case, ``-``/``_`` as spaces, single spaces) among the field's vocabulary
   terms, the synonyms of :data:`TERM_SYNONYMS` and the plural forms of both (``papules``, ``bullae``, ``patches``);
2. a negated term (``no scale``, ``without crust``, ``absent``) and a placeholder (``unknown``, ``not visible``)
   state nothing;
3. the vocabulary terms and synonyms occurring as whole words inside the term, longest first and non-overlapping
   (``bright red`` -> red, ``reddish brown`` -> red + brown, ``small scaly plaques`` in lesion type -> plaque);
4. the closest key within a length-scaled typo allowance (optimal string alignment distance by rapidfuzz: 0 edits
   up to 4 characters, 1 up to 9, 2 beyond, as in ``taxonomy.match_label``), for the whole term and then for each
   word of 5 or more characters; a tie between different vocabulary terms maps to nothing;
5. otherwise the term stays free text and compares as its key.

Pure Python; nothing is cached, so the cost per answer is what the reward benchmark measures.
"""

from __future__ import annotations

import re

from rapidfuzz import process
from rapidfuzz.distance import OSA

from skinflow.formats import CAPTION_FIELDS, FIELD_VALUES

__all__ = ["NEGATIONS", "NOTHING", "TERM_SYNONYMS", "allowed_edits", "field_terms", "map_term", "split_terms", "term_key"]

# Synonym -> vocabulary term(s), per field. Keys are written as term_key() leaves them (lower case, spaces for
# hyphens); plural forms of keys and vocabulary terms are added automatically.
TERM_SYNONYMS: dict[str, dict[str, str | tuple[str, ...]]] = {
    "color": {
        "erythematous": "red", "erythema": "red", "reddish": "red", "redness": "red", "crimson": "red",
        "scarlet": "red", "red colored": "red", "pinkish": "pink", "rose": "pink", "orangish": "orange",
        "yellowish": "yellow", "brownish": "brown", "brown colored": "brown", "blackish": "black",
        "bluish": "blue", "grey": "gray", "greyish": "gray", "grayish": "gray", "purplish": "purple",
        "violet": "violaceous", "lilac": "violaceous", "whitish": "white", "flesh colored": "skin-colored",
        "flesh coloured": "skin-colored", "skin coloured": "skin-colored", "flesh toned": "skin-colored",
        "skin toned": "skin-colored", "skin color": "skin-colored", "skin colour": "skin-colored",
        "normochromic": "skin-colored", "hyperpigmentation": "hyperpigmented", "hypopigmentation": "hypopigmented",
        "depigmentation": "depigmented", "pigmentation": "pigmented", "melanotic": "pigmented",
        "salmon colored": "salmon", "salmon pink": "salmon",
    },
    "location": {
        "facial": "face", "eyelids": "eyelid", "lids": "eyelid", "cheeks": "cheek",
        "nasal": "nose", "ears": "ear", "auricle": "ear", "lips": "lip", "labial": "lip", "oral": "mouth",
        "perioral": "mouth", "oral cavity": "mouth", "cervical": "neck", "thorax": "chest", "thoracic": "chest",
        "breasts": "breast", "upper back": "back", "lower back": "back", "abdominal": "abdomen", "belly": "abdomen",
        "torso": "trunk", "flanks": "flank", "armpit": "axilla", "axillary": "axilla", "axillae": "axilla",
        "inguinal": "groin", "genital": "genitals", "genitalia": "genitals", "gluteal": "buttock",
        "buttocks": "buttock", "shoulders": "shoulder", "upper arm": "arm", "elbows": "elbow", "forearms": "forearm",
        "wrists": "wrist", "dorsum of hand": "hand", "hands": "hand", "palmar": "palm", "fingers": "finger",
        "digits": "finger", "nails": "nail", "thighs": "thigh", "knees": "knee", "lower leg": "leg", "legs": "leg",
        "shins": "shin", "pretibial": "shin", "ankles": "ankle", "feet": "foot", "plantar": "sole", "toes": "toe",
        "skin folds": "skin fold", "intertriginous": "skin fold", "mucous membrane": "mucosa", "mucosal": "mucosa",
        "widespread": "generalized", "generalised": "generalized", "whole body": "generalized",
    },
    "shape": {
        "circular": "round", "rounded": "round", "ovoid": "oval", "oval shaped": "oval", "elliptical": "oval",
        "ring shaped": "annular", "ring": "annular", "ring like": "annular", "arciform": "arcuate", "arc": "arcuate",
        "arc shaped": "arcuate", "irregularly shaped": "irregular", "asymmetrical": "irregular", "straight": "linear",
        "streak": "linear", "snake like": "serpiginous", "angular": "polygonal", "target": "targetoid",
        "target like": "targetoid", "iris": "targetoid", "coin shaped": "nummular", "discoid": "nummular",
        "dome": "dome-shaped", "domed": "dome-shaped", "flat topped": "flat-topped", "stalked": "pedunculated",
        "fungating": "exophytic", "exophytic growth": "exophytic", "umbilication": "umbilicated",
        "central umbilication": "umbilicated", "pointed": "acuminate", "spiky": "acuminate",
    },
    "lesion_type": {
        "macular": "macule", "patchy": "patch", "papular": "papule", "plaque like": "plaque", "nodular": "nodule",
        "vesicular": "vesicle", "bullous": "bulla", "pustular": "pustule", "abscesses": "abscess",
        "urticarial": "wheal", "hive": "wheal", "hives": "wheal", "welt": "wheal", "weal": "wheal",
        "cystic": "cyst", "comedones": "comedo", "comedonal": "comedo", "blackhead": "comedo",
        "whitehead": "comedo", "ulceration": "ulcer", "ulcerative": "ulcer", "scarring": "scar",
        "petechia": "purpura", "petechiae": "purpura", "purpuric": "purpura", "ecchymosis": "purpura",
        "tumour": "tumor", "mass": "tumor", "maculopapular": ("macule", "papule"),
        "papulovesicular": ("papule", "vesicle"), "papulopustular": ("papule", "pustule"),
        "papulosquamous": ("papule", "plaque"),
    },
    "number": {
        "solitary": "single", "one": "single", "isolated": "single", "a single": "single", "1": "single",
        "unique": "single", "several": "few", "a few": "few", "couple": "few", "two": "few", "three": "few",
        "2": "few", "3": "few", "many": "multiple", "multiple lesions": "multiple", "countless": "numerous",
        "innumerable": "numerous", "dozens": "numerous", "myriad": "numerous",
    },
    "size": {
        "tiny": "pinpoint", "punctate": "pinpoint", "minute": "pinpoint", "little": "small",
        "medium sized": "medium", "moderate": "medium", "intermediate": "medium", "moderate sized": "medium",
        "big": "large", "huge": "very large", "giant": "very large", "extensive": "very large",
    },
    "texture": {
        "induration": "indurated", "sclerosis": "sclerotic", "sclerosed": "sclerotic", "atrophy": "atrophic",
        "lichenification": "lichenified", "xerotic": "dry", "xerosis": "dry", "thick": "thickened",
        "velvet": "velvety", "fragile": "friable", "rubbery": "firm",
    },
    "border": {
        "well demarcated": "well-defined", "well circumscribed": "well-defined", "sharply demarcated": "well-defined",
        "sharply defined": "well-defined", "sharp": "well-defined", "circumscribed": "well-defined",
        "distinct": "well-defined", "clear": "well-defined", "clearly defined": "well-defined",
        "poorly defined": "ill-defined", "poorly demarcated": "ill-defined", "poorly circumscribed": "ill-defined",
        "indistinct": "ill-defined", "blurred": "ill-defined", "vague": "ill-defined", "diffuse": "ill-defined",
        "not well defined": "ill-defined", "irregularly": "irregular", "jagged": "irregular", "notched": "irregular",
        "elevated": "raised", "rolled edge": "rolled", "rolled border": "rolled", "pearly rolled": "rolled",
        "scalloping": "scalloped",
    },
    "surface": {
        "glossy": "shiny", "scale": "scaly", "scaling": "scaly", "scaled": "scaly", "flaky": "scaly",
        "flaking": "scaly", "desquamation": "scaly", "desquamating": "scaly", "squamous": "scaly",
        "crust": "crusted", "crusting": "crusted", "encrusted": "crusted", "erosion": "eroded",
        "erosive": "eroded", "ulceration": "ulcerated", "ulcer": "ulcerated", "exudate": "exudative",
        "oozing": "exudative", "weeping": "exudative", "fissure": "fissured", "fissuring": "fissured",
        "cracked": "fissured", "cracking": "fissured", "excoriation": "excoriated", "scratched": "excoriated",
        "scratch marks": "excoriated", "verrucous": "warty", "papillomatous": "warty", "verrucoid": "warty",
        "hyperkeratotic": "keratotic", "hyperkeratosis": "keratotic", "horny": "keratotic",
        "telangiectasia": "telangiectatic", "telangiectases": "telangiectatic",
    },
    "distribution": {
        "localised": "localized", "local": "localized", "focal": "localized", "generalised": "generalized",
        "widespread": "generalized", "disseminated": "generalized", "diffuse": "generalized",
        "clustered": "grouped", "in clusters": "grouped", "herpetiform": "grouped", "coalescing": "confluent",
        "merging": "confluent", "coalescent": "confluent", "zosteriform": "dermatomal", "segmental": "dermatomal",
        "symmetrical": "symmetric", "symmetrically": "symmetric", "asymmetrical": "asymmetric",
        "one sided": "unilateral", "both sides": "bilateral", "perifollicular": "follicular", "flexor": "flexural",
        "flexures": "flexural", "extensor surfaces": "extensor", "sun exposed areas": "sun-exposed",
        "photodistributed": "sun-exposed", "photo distributed": "sun-exposed", "reticulated": "reticular",
        "net like": "reticular", "lacy": "reticular",
    },
    "surrounding": {
        "normal": "normal skin", "unremarkable": "normal skin", "healthy skin": "normal skin",
        "normal surrounding skin": "normal skin", "erythematous": "erythema", "redness": "erythema",
        "red": "erythema", "oedema": "edema", "swelling": "edema", "swollen": "edema", "edematous": "edema",
        "hyperpigmented": "hyperpigmentation", "hypopigmented": "hypopigmentation", "scar": "scarring",
        "scars": "scarring", "satellites": "satellite lesions", "satellite papules": "satellite lesions",
        "satellite pustules": "satellite lesions", "telangiectases": "telangiectasia",
        "telangiectatic": "telangiectasia", "atrophic": "atrophy",
    },
    "other": {
        "telangiectases": "telangiectasia", "telangiectatic": "telangiectasia", "poikilodermatous": "poikiloderma",
        "alopecia": "hair loss", "loss of hair": "hair loss", "bleeds": "bleeding", "hemorrhage": "bleeding",
        "haemorrhage": "bleeding", "hemorrhagic": "bleeding", "bloody": "bleeding", "nail dystrophy": "nail changes",
        "nail pitting": "nail changes", "onychodystrophy": "nail changes", "koebner": "koebner phenomenon",
        "koebnerization": "koebner phenomenon", "koebnerisation": "koebner phenomenon",
        "isomorphic response": "koebner phenomenon",
    },
}

# Plurals that adding "s"/"es" does not give.
_IRREGULAR_PLURALS = {"bulla": "bullae", "comedo": "comedones", "foot": "feet", "axilla": "axillae",
                      "petechia": "petechiae", "telangiectasia": "telangiectasias"}

# A term starting with one of these words states that the finding is absent.
NEGATIONS = frozenset({"no", "not", "without", "absent", "absence", "none", "non", "free", "lack", "lacking"})
# Terms that state nothing (besides the placeholders that formats.normalize_value already empties).
NOTHING = frozenset({
    "unknown", "not visible", "not seen", "not present", "not applicable", "not assessable", "not specified",
    "unspecified", "nothing", "nothing notable", "not determined", "cannot be determined", "indeterminate",
    "not evaluable", "not observed", "n a", "nil",
})

_SEPARATORS = re.compile(r",|;|(?<!\bn)/|/(?!a\b)|\band\b|\bor\b|\+|&")  # "n/a" stays whole
_EDGE = " \t*_`'\"“”‘’,;|{}[]<>#."
_PLACEHOLDERS = frozenset({"none", "n/a", "na", "null", "nil", "-", "not applicable", "empty"})
_MAX_TERMS = 32  # terms read per field value; an answer that lists more is read up to here
_MAX_TERM_WORDS = 12  # words of one term looked at for vocabulary words inside it
_MIN_FUZZY_WORD = 5


def term_key(term: str) -> str:
    """The comparison form of a normalised term: hyphens and underscores as spaces, single spaces."""
    if "-" not in term and "_" not in term and "  " not in term:
        return term
    return " ".join(term.replace("-", " ").replace("_", " ").split())


def split_terms(value: str) -> list[str]:
    """The terms of a normalised field value (``formats.normalize_value`` output), as their keys, de-duplicated.

    Splits like ``formats.split_values`` (``,`` ``;`` ``/`` ``+`` ``&``, "and", "or"; but ``n/a`` stays whole and is a
    placeholder) without normalising each part again (the value already is), so it is cheap; at most the first 32
    terms are returned.
    """
    if not value:
        return []
    if ("," not in value and ";" not in value and "/" not in value and "+" not in value and "&" not in value
            and "and" not in value and "or" not in value):  # one term (the usual case): no regex
        term = term_key(value.strip(_EDGE))
        return [term] if term and term not in _PLACEHOLDERS else []
    terms: dict[str, None] = {}
    for part in _SEPARATORS.split(value):
        part = part.strip(_EDGE)
        if part and part not in _PLACEHOLDERS:
            terms[term_key(part)] = None
            if len(terms) >= _MAX_TERMS:
                break
    terms.pop("", None)
    return list(terms)


def allowed_edits(length: int) -> int:
    """Typos tolerated for a key of ``length`` characters: none up to 4, one up to 9, two beyond."""
    if length <= 4:
        return 0
    return 1 if length <= 9 else 2


def _plurals(key: str) -> list[str]:
    """English plural forms of the last word of ``key`` (``patch`` -> ``patches``, ``bulla`` -> ``bullae``)."""
    head, _, word = key.rpartition(" ")
    head = head + " " if head else ""
    if word.endswith(("s", "x", "z", "ch", "sh")):
        forms = [word + "es"]
    elif word.endswith("y") and len(word) > 1 and word[-2] not in "aeiou":
        forms = [word[:-1] + "ies"]
    else:
        forms = [word + "s"]
    if word in _IRREGULAR_PLURALS:
        forms.append(_IRREGULAR_PLURALS[word])
    return [head + form for form in forms]


def _build_lookup(field: str) -> dict[str, tuple[str, ...]]:
    lookup: dict[str, tuple[str, ...]] = {}
    entries = [(term_key(term), (term,)) for term in FIELD_VALUES[field]]
    for synonym, target in TERM_SYNONYMS.get(field, {}).items():
        targets = (target,) if isinstance(target, str) else tuple(target)
        entries.append((term_key(synonym), targets))
    # Plural forms first, so that an explicit entry of the same spelling wins.
    for key, targets in entries:
        for plural in _plurals(key):
            lookup.setdefault(plural, targets)
    for key, targets in entries:
        lookup[key] = targets
    vocabulary = set(FIELD_VALUES[field])
    bad = {key: targets for key, targets in lookup.items() if not set(targets) <= vocabulary}
    if bad:  # a mistake in the table above, not in any input
        raise AssertionError(f"TERM_SYNONYMS[{field!r}] maps onto terms outside FIELD_VALUES: {bad}")
    return lookup


_LOOKUP: dict[str, dict[str, tuple[str, ...]]] = {field: _build_lookup(field) for field in CAPTION_FIELDS}
# Keys that typo matching may reach, by their own allowance (keys of 4 characters or fewer are matched exactly only).
_FUZZY_KEYS: dict[str, tuple[tuple[int, list[str]], ...]] = {
    field: tuple((allowance, [key for key in lookup if allowed_edits(len(key)) == allowance]) for allowance in (1, 2))
    for field, lookup in _LOOKUP.items()
}
_LONGEST_KEY_WORDS = {field: max(len(key.split()) for key in lookup) for field, lookup in _LOOKUP.items()}


def field_terms(field: str) -> dict[str, tuple[str, ...]]:
    """Every key that maps exactly onto ``field``'s vocabulary (terms, synonyms, plurals) -> vocabulary terms."""
    return dict(_LOOKUP[field])


def _closest(field: str, key: str) -> tuple[str, ...] | None:
    """The vocabulary terms of the key strictly closest to ``key`` within its typo allowance, else ``None``."""
    allowance = allowed_edits(len(key))
    if allowance == 0:
        return None
    lookup = _LOOKUP[field]
    best_distance = allowance + 1
    best: set[tuple[str, ...]] = set()
    for key_allowance, keys in _FUZZY_KEYS[field]:
        # A typo must be within the allowance of both the typed key and the key it is taken for.
        cutoff = min(allowance, key_allowance)
        for name, distance, _ in process.extract(key, keys, scorer=OSA.distance, score_cutoff=cutoff, limit=None):
            if distance < best_distance:
                best_distance, best = distance, {lookup[name]}
            elif distance == best_distance:
                best.add(lookup[name])
    return best.pop() if len(best) == 1 else None


def map_term(field: str, key: str) -> tuple[str, ...]:
    """The vocabulary terms of ``field`` that the term ``key`` (a :func:`split_terms` key) names.

    Returns:
        the vocabulary terms (usually one); ``()`` when the term states nothing (negated, a placeholder); or
        ``(key,)`` when it names nothing of the vocabulary (free text, compared as it is).
    """
    lookup = _LOOKUP[field]
    found = lookup.get(key)
    if found is not None:
        return found
    if key in NOTHING:
        return ()
    words = key.split()
    if words[0] in NEGATIONS:
        return ()
    words = words[:_MAX_TERM_WORDS]
    contained: list[str] = []
    covered = [False] * len(words)
    for width in range(min(_LONGEST_KEY_WORDS[field], len(words)), 0, -1):
        for start in range(len(words) - width + 1):
            if any(covered[start : start + width]):
                continue
            terms = lookup.get(" ".join(words[start : start + width]))
            if terms:
                contained.extend(terms)
                covered[start : start + width] = [True] * width
    if contained:
        return tuple(dict.fromkeys(contained))
    closest = _closest(field, key)
    if closest is not None:
        return closest
    if len(words) > 1:
        for word in words:
            if len(word) >= _MIN_FUZZY_WORD:
                closest = _closest(field, word)
                if closest:
                    contained.extend(closest)
        if contained:
            return tuple(dict.fromkeys(contained))
    return (key,)
