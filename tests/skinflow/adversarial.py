"""Adversarial values for the tests of code that reads untrusted text (model output, files): objects whose
``str``/``repr`` raise, fake and hostile str subclasses, and a time limit for "bounded time" checks."""

import contextlib
import signal
import threading


@contextlib.contextmanager
def time_limit(seconds: float):
    """Fail instead of hanging when the block runs longer than ``seconds`` (a generous bound, not a benchmark)."""
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expired(signum, frame):
        raise TimeoutError(f"took longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class Unprintable:
    def __str__(self):
        raise RuntimeError("__str__ of a hostile object")

    __repr__ = __str__


class FakeStr(Unprintable):
    """Claims to be a str (``isinstance(value, str)`` is true) without being one."""

    __class__ = property(lambda self: str)


class HostileStr(str):
    """A str whose methods all raise: a parser must read its characters without calling any of them."""

    def _raise(self, *args, **kwargs):
        raise RuntimeError("method of a hostile str subclass")

    __str__ = __repr__ = __hash__ = __getitem__ = __iter__ = __len__ = __contains__ = __eq__ = _raise
    find = split = splitlines = strip = casefold = lower = startswith = endswith = encode = _raise
