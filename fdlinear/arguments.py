"""Checks of constructor arguments: one error naming the argument, before anything is built."""

from __future__ import annotations

import math
import numbers
import operator

import torch


def integer(name: str, value: object, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as a Python int (numpy and other integer types accepted, as ``nn.Linear`` does), else a
    TypeError naming ``name`` (bools and floats included); a ValueError when outside [minimum, maximum]."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    try:
        number = operator.index(value)
    except TypeError as error:  # e.g. a tensor with several elements
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}") from error
    if isinstance(value, torch.Tensor) and value.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer, got a bool tensor")
    if minimum is not None and number < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {number}")
    if maximum is not None and number > maximum:
        raise ValueError(f"{name} must be an integer <= {maximum}, got {number}")
    return number


def finite_number(name: str, value: object, minimum: float | None = None) -> float:
    """``value`` as a finite float >= ``minimum``, else a TypeError/ValueError naming ``name`` (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {number}")
    if minimum is not None and number < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {number}")
    return number


def flag(name: str, value: object) -> bool:
    """``value`` as a bool (Python or numpy bool), else a TypeError naming ``name``."""
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return bool(value)
    raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")


def floating_dtype(name: str, dtype: object) -> None:
    """A TypeError naming ``name`` unless ``dtype`` is None or a floating-point torch dtype."""
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"{name} must be a floating-point torch dtype, got {dtype!r}")
