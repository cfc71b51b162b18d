"""Noisy model answers with known truth, for the rewards' matching-accuracy tests and speed benchmarks.

Every generator is seeded (``random.Random``) and pure Python. Diagnosis candidates are a label or one of its
aliases with one or two perturbations of the kinds a model produces — case, plural, hyphen for a space, a typo within
the matcher's allowance, a hedge (``possible X``, ``likely X``), a trailing comment or score (``X (70%)``), another
word order — and every answer carries a unique case number so that no two are equal (no cache can help).
"""

from __future__ import annotations

import random
import string

from skinflow.formats import CAPTION_FIELDS, DEFAULT_K, FIELD_VALUES, format_caption
from skinflow.rewards.terms import TERM_SYNONYMS, allowed_edits
from skinflow.taxonomy import ALIASES, LABELS

__all__ = ["NOISE_KINDS", "UNRELATED", "noisy_candidate", "noisy_caption", "noisy_diagnosis_answer", "perturb", "random_caption"]

NOISE_KINDS = ("case", "plural", "hyphen", "typo", "hedge", "comment", "order", "alias")
HEDGES = ("possible", "probable", "likely", "suspected", "most likely", "consistent with", "rule out", "possibly")
COMMENTS = ("({p}%)", "- {p}%", "({p}% confidence)", "(most likely)", "[{p}%]", ": favoured", "(less likely)")
# Text that names no diagnosis: everything here must match no label.
UNRELATED = (
    "the weather is nice today", "banana", "table", "i don't know", "cannot determine", "not sure", "normal skin",
    "healthy skin", "skin", "lesion", "rash", "unknown", "image quality too low", "please consult a doctor",
    "see a dermatologist", "red patch", "none of the above", "no diagnosis", "car", "photograph", "python code",
    "lorem ipsum dolor sit amet", "the patient", "benign", "thank you", "12345", "???", "n/a", "xyzzy", "left arm",
)
_ALIASES_OF: dict[str, list[str]] = {}
for _alias, _label in ALIASES.items():
    _ALIASES_OF.setdefault(_label, []).append(_alias)


def _typo(word: str, rng: random.Random) -> str:
    """One edit (substitute, delete, insert, swap adjacent) at an inner letter of ``word``."""
    if len(word) < 3:
        return word
    i = rng.randrange(1, len(word) - 1)
    kind = rng.randrange(4)
    letter = rng.choice(string.ascii_lowercase)
    if kind == 0:
        return word[:i] + letter + word[i + 1 :]
    if kind == 1:
        return word[:i] + word[i + 1 :]
    if kind == 2:
        return word[:i] + letter + word[i:]
    return word[: i - 1] + word[i] + word[i - 1] + word[i + 1 :]


def perturb(name: str, kind: str, rng: random.Random) -> str:
    """``name`` with one perturbation of ``kind`` (one of ``NOISE_KINDS``; ``alias`` is applied by the caller)."""
    words = name.split()
    if kind == "case":
        return rng.choice((name.upper(), name.title(), name.capitalize()))
    if kind == "plural":
        last = words[-1]
        if last.endswith(("s", "x", "sh", "ch", "a", "us", "is")) or len(last) < 4:
            return name
        return " ".join([*words[:-1], last + "s"])
    if kind == "hyphen":
        return "-".join(words) if len(words) > 1 else name
    if kind == "typo":
        # Only where the matcher allows a typo (long enough words), one edit in the longest word.
        longest = max(range(len(words)), key=lambda i: len(words[i]))
        if allowed_edits(len(name)) == 0 or len(words[longest]) < 6:
            return name
        return " ".join([*words[:longest], _typo(words[longest], rng), *words[longest + 1 :]])
    if kind == "hedge":
        return f"{rng.choice(HEDGES)} {name}"
    if kind == "comment":
        return f"{name} {rng.choice(COMMENTS).format(p=rng.randint(5, 95))}"
    if kind == "order":
        if len(words) < 2:
            return name
        shuffled = words[:]
        while shuffled == words:
            rng.shuffle(shuffled)
        return " ".join(shuffled)
    raise ValueError(f"kind must be one of {NOISE_KINDS}, got {kind!r}")


def noisy_candidate(label: str, rng: random.Random, kinds: int = 2) -> str:
    """A free-text candidate naming ``label``: the label or an alias, with up to ``kinds`` perturbations (at most
    one of typo / word order, which the matcher does not handle together)."""
    name = label
    if label in _ALIASES_OF and rng.random() < 0.25:
        name = rng.choice(_ALIASES_OF[label])
    chosen = rng.sample([k for k in NOISE_KINDS if k != "alias"], kinds)
    if "typo" in chosen and "order" in chosen:
        chosen.remove("order")
    # Word-level perturbations first, decorations (hedges, comments) last.
    for kind in sorted(chosen, key=("order", "typo", "plural", "hyphen", "case", "hedge", "comment").index):
        name = perturb(name, kind, rng)
    return name


def noisy_diagnosis_answer(label: str, rng: random.Random, case: int, k: int = DEFAULT_K) -> tuple[str, int]:
    """A ranked answer of ``k`` noisy candidates with ``label`` at a random rank (or absent), and that rank (0: absent).

    The other candidates are other labels (noisy too); the list style varies (``1.``, ``1)``, bullets, one line) and
    a unique case number (``case``) keeps every answer distinct.
    """
    others = [other for other in rng.sample(LABELS, k + 3) if other != label][: k - 1]
    rank = rng.randint(0, k)  # 0: the truth is not among the candidates
    names = [noisy_candidate(o, rng, rng.randint(0, 2)) for o in others]
    truth = noisy_candidate(label, rng, rng.randint(1, 2))
    if rank:
        names.insert(rank - 1, truth)
    else:
        names.append(noisy_candidate(rng.choice(others), rng, 1))
    names = names[:k]
    style = rng.randrange(4)
    if style == 0:
        body = "\n".join(f"{i}. {n}" for i, n in enumerate(names, 1))
    elif style == 1:
        body = "\n".join(f"{i}) {n}" for i, n in enumerate(names, 1))
    elif style == 2:
        body = "\n".join(f"- {n}" for n in names)
    else:
        body = " ".join(f"{i}. {n}" for i, n in enumerate(names, 1))
    return f"Differential for case {case}:\n{body}", rank


def noisy_caption(caption: dict[str, str], rng: random.Random, case: int) -> str:
    """``format_caption(caption)`` as a model might write it: synonyms and plurals of the terms, some typos, some
    reordered or missing lines, a case number in ``other``; distinct for every ``case``."""
    noisy: dict[str, str] = {}
    for field in CAPTION_FIELDS:
        value = caption.get(field, "")
        if not value:
            noisy[field] = ""
            continue
        synonyms = [s for s, t in TERM_SYNONYMS.get(field, {}).items() if t == value]
        roll = rng.random()
        if synonyms and roll < 0.3:
            value = rng.choice(synonyms)
        elif roll < 0.45 and len(value) > 5:
            value = _typo(value, rng)
        elif roll < 0.55:
            value = value.upper()
        noisy[field] = value
    text = format_caption({f: v for f, v in noisy.items()})
    lines = text.split("\n")
    if rng.random() < 0.2:
        del lines[rng.randrange(len(lines))]
    if rng.random() < 0.2:
        i = rng.randrange(len(lines) - 1)
        lines[i], lines[i + 1] = lines[i + 1], lines[i]
    return "\n".join(lines) + f"\nnote: case {case}"


def random_caption(rng: random.Random) -> dict[str, str]:
    """A caption of vocabulary terms (about half the fields empty)."""
    return {field: (rng.choice(FIELD_VALUES[field]) if rng.random() < 0.6 else "") for field in CAPTION_FIELDS}

