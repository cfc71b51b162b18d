"""Small helpers every layer of skinflow uses: argument checks, short descriptions of values for messages, atomic
writes, the package's resource files, and progress bars on stderr. Pure Python (rich is imported only when a
progress bar is drawn)."""

from __future__ import annotations

import csv
import gzip
import io
import math
import numbers
import os
import reprlib
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from importlib import resources
from pathlib import Path
from typing import IO, Any, TypeVar

Item = TypeVar("Item")

_DESCRIBE = reprlib.Repr()
_DESCRIBE.maxlevel, _DESCRIBE.maxstring, _DESCRIBE.maxother, _DESCRIBE.maxlong = 3, 80, 80, 40
_DESCRIBE.maxlist = _DESCRIBE.maxtuple = _DESCRIBE.maxdict = _DESCRIBE.maxset = _DESCRIBE.maxfrozenset = 6
_DESCRIBE_LIMIT = 160


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type. A ``TypeError`` as Python code expects, and a ``ValueError`` like every other
    user error of skinflow, so that one ``except ValueError`` (the CLI's) catches them all."""


def describe(value: object) -> str:
    """A short ``repr`` of any value for error messages: bounded length and depth, never raises."""
    try:
        text = _DESCRIBE.repr(value)
    except Exception:  # a repr that fails (huge int, broken __repr__, ...) is replaced by the type
        text = f"<{type(value).__name__}>"
    return shorten(text)


def shorten(text: str, limit: int = _DESCRIBE_LIMIT) -> str:
    """``text`` cut to ``limit`` characters (ending in "...") for a message."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def error_summary(error: BaseException) -> str:
    """``Type: first line of the message`` of an exception, for a one-line report."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def check_int(name: str, value: object, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an int, or an error naming ``name``: ints and numpy integers pass, bools and floats never do
    (:class:`ArgumentTypeError`); out of [minimum, maximum] is a ``ValueError``."""
    bound = f" >= {minimum}" if minimum is not None else ""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ArgumentTypeError(f"{name} must be an int{bound}, got {describe(value)}")
    number = int(value)
    if minimum is not None and number < minimum:
        raise ValueError(f"{name} must be an int{bound}, got {number}")
    if maximum is not None and number > maximum:
        raise ValueError(f"{name} must be an int <= {maximum}, got {number}")
    return number


def check_number(name: str, value: object, *, minimum: float | None = None, maximum: float | None = None) -> float:
    """``value`` as a finite float within [minimum, maximum], or an error naming ``name`` (bools, NaN and infinities
    never pass)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentTypeError(f"{name} must be a number, got {describe(value)}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {describe(value)}")
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        low = "-inf" if minimum is None else f"{minimum:g}"
        high = "inf" if maximum is None else f"{maximum:g}"
        raise ValueError(f"{name} must be in [{low}, {high}], got {describe(value)}")
    return number


def check_fraction(name: str, value: object, *, below_one: bool = False) -> float:
    """``value`` as a finite float in [0, 1] (``[0, 1)`` with ``below_one``), or an error naming ``name``."""
    interval = "[0, 1)" if below_one else "[0, 1]"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentTypeError(f"{name} must be a number in {interval}, got {describe(value)}")
    number = float(value)
    if not math.isfinite(number) or number < 0.0 or number > 1.0 or (below_one and number == 1.0):
        raise ValueError(f"{name} must be a finite number in {interval}, got {describe(value)}")
    return number


def _umask() -> int:
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def new_file_mode() -> int:
    """The permission bits a newly created file gets under the current umask (``mkstemp``'s files are 0600)."""
    return 0o666 & ~_umask()


def new_directory_mode() -> int:
    """The permission bits a newly created directory gets under the current umask (``mkdtemp``'s are 0700)."""
    return 0o777 & ~_umask()


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[Any]], object], *, binary: bool = False) -> Path:
    """Write a file so that readers see either the old file or the complete new one, never a partial file.

    Args:
        path: the file to write; its directory must exist.
        write: called with an open file object (text UTF-8 with ``\\n`` line ends, or binary); whatever it raises
            propagates and leaves ``path`` untouched.
        binary: open the file in binary mode.

    Returns:
        ``path`` as a ``Path``. The data goes to a temporary file in the same directory, which is flushed, synced,
        given the usual permissions (``0666 & ~umask``) and moved over ``path`` with ``os.replace``.
    """
    options: dict[str, Any] = {} if binary else {"encoding": "utf-8", "newline": "\n"}

    def save(name: str) -> None:
        with open(name, "wb" if binary else "w", **options) as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())

    return atomic_save(path, save)


def atomic_save(path: str | os.PathLike[str], save: Callable[[str], object]) -> Path:
    """Like :func:`atomic_write`, for writers that take a file name (``figure.savefig``, ``Image.save``): ``save`` is
    called with a temporary name in ``path``'s directory (same suffix), which then replaces ``path``."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:200]}.", suffix=f".tmp{path.suffix}")
    os.close(handle)
    try:
        save(temporary)
        os.chmod(temporary, new_file_mode())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    return path


def resource_bytes(name: str) -> bytes:
    """The bytes of a file of ``skinflow/resources/`` (see its NOTICE.md), gunzipped when the name ends in .gz."""
    data = resources.files("skinflow").joinpath("resources", name).read_bytes()
    return gzip.decompress(data) if name.endswith(".gz") else data


def read_resource_csv(name: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a CSV (or .csv.gz) file of ``skinflow/resources/``."""
    reader = csv.reader(io.StringIO(resource_bytes(name).decode("utf-8")))
    header = next(reader)
    return header, list(reader)


def read_resource_records(name: str) -> list[dict[str, str]]:
    """The rows of a CSV (or .csv.gz) file of ``skinflow/resources/`` as dicts keyed by its header."""
    header, rows = read_resource_csv(name)
    return [dict(zip(header, row)) for row in rows]


def stderr_is_terminal() -> bool:
    """Whether stderr is a terminal (progress bars are drawn only there by default)."""
    isatty = getattr(sys.stderr, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (ValueError, OSError):  # a closed or odd stream
        return False


def progress(items: Iterable[Item], description: str, *, total: int | None = None,
             enabled: bool = True) -> Iterator[Item]:
    """``items``, with a progress bar on stderr while they are consumed when ``enabled``."""
    if not enabled:
        yield from items
        return
    from rich.console import Console
    from rich.progress import track

    yield from track(items, description=description, total=total, console=Console(stderr=True))
