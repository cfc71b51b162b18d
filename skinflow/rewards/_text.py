"""The text of a completion, whatever shape a trainer hands it in; never raises, bounded work."""

from __future__ import annotations

from skinflow.formats import MAX_TEXT_CHARS

__all__ = ["completion_text"]

_MAX_MESSAGES = 64  # messages (and content blocks per message) looked at
_SKIPPED_ROLES = frozenset({"system", "user", "tool"})


def _plain(value: object) -> str | None:
    """``value`` as a plain str (a subclass is copied, so none of its overrides run), else ``None``."""
    if issubclass(type(value), str):
        return str.__str__(value)[:MAX_TEXT_CHARS]
    return None


def _is(value: object, kind: type) -> bool:
    """``isinstance`` by the real type only (``isinstance`` also asks ``__class__``, which an object can fake or make
    raise)."""
    return issubclass(type(value), kind)


def _items(value: object, limit: int | None = _MAX_MESSAGES) -> list[object] | None:
    """The first items of a list or tuple, read without calling anything a subclass overrides."""
    if _is(value, list):
        return list.__getitem__(value, slice(0, limit))
    if _is(value, tuple):
        return tuple.__getitem__(value, slice(0, limit))
    return None


def _content_text(content: object) -> str | None:
    """The text of a message's ``content``: a str, or a list of blocks ``{"type": "text", "text": ...}`` / str."""
    text = _plain(content)
    if text is not None:
        return text
    blocks = _items(content)
    if blocks is None:
        return None
    parts = []
    for block in blocks:
        part = _plain(block)
        if part is None and _is(block, dict):
            part = _plain(dict.get(block, "text"))
        if part is not None:
            parts.append(part)
    return _joined(parts)


def _joined(parts: list[str]) -> str | None:
    """``parts`` joined with line breaks, cut to ``MAX_TEXT_CHARS`` (each part already is), or ``None``."""
    if not parts:
        return None
    kept, size = [], 0
    for part in parts:
        kept.append(part)
        size += len(part) + 1
        if size >= MAX_TEXT_CHARS:
            break
    return "\n".join(kept)[:MAX_TEXT_CHARS]


def _message_text(message: object) -> str | None:
    if not _is(message, dict):
        return _plain(message)
    if _plain(dict.get(message, "role")) in _SKIPPED_ROLES:
        return None
    return _content_text(dict.get(message, "content"))


def completion_text(completion: object) -> str | None:
    """The answer text of ``completion``, or ``None`` when it holds none.

    Accepts a ``str`` (verl, TRL standard format), one message ``{"role": "assistant", "content": ...}``, or a list
    of messages (TRL conversational format: ``[{"role": "assistant", "content": "..."}]``), where ``content`` is a
    str or a list of content blocks (``{"type": "text", "text": "..."}``). The text of all assistant (or role-less)
    messages is joined with line breaks; system, user and tool messages are skipped. Only the first 64 messages and
    64 blocks of each, and the first ``formats.MAX_TEXT_CHARS`` characters of the result, are read. Nothing nested
    deeper is looked at, and nothing any other value (``None``, bytes, numbers, objects) holds.
    """
    text = _plain(completion)
    if text is not None:
        return text
    if _is(completion, dict):
        return _message_text(completion)
    messages = _items(completion)
    if messages is None:
        return None
    parts, size = [], 0
    for message in messages:
        part = _message_text(message)
        if part is not None:
            parts.append(part)
            size += len(part) + 1
            if size >= MAX_TEXT_CHARS:
                break
    return _joined(parts)
