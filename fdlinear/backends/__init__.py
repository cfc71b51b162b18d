"""FDLinear backends: ``reference`` (PyTorch), ``triton`` (fused kernels), ``native`` (csrc/).

:func:`get_op` returns the differentiable op of a backend; :func:`resolve_backend`
picks one from an explicit name, the ``FDLINEAR_BACKEND`` environment variable or the device.
"""

from __future__ import annotations

import os

import torch

from fdlinear.backends import reference
from fdlinear.backends.registry import BackendOp, register_backend, registered_backends

BACKENDS = ("reference", "triton", "native")
ENV_VAR = "FDLINEAR_BACKEND"

register_backend("reference", reference.forward, reference.backward)


def _register_optional() -> None:
    """Register the triton and native backends where their toolchains are present (silently absent otherwise;
    each module warns once itself when it was expected to work but could not load)."""
    import importlib

    for module in ("fdlinear.backends.triton", "fdlinear.backends.native"):
        try:
            importlib.import_module(module).register()
        except ImportError:
            continue


_register_optional()


def available_backends() -> list[str]:
    """Names of the backends that can run in this process."""
    return [name for name in BACKENDS if name in registered_backends()]


def resolve_backend(backend: str | None, device: torch.device) -> str:
    """The backend to run: ``backend`` if given, else ``$FDLINEAR_BACKEND``, else the device default."""
    name = backend or os.environ.get(ENV_VAR) or None
    if name is None:
        return default_backend(device)
    if name not in BACKENDS:
        source = "backend" if backend else ENV_VAR
        raise ValueError(f"{source} must be one of {BACKENDS}, got {name!r}")
    if name not in registered_backends():
        raise RuntimeError(f"backend {name!r} is not available here; available: {available_backends()}")
    return name


def default_backend(device: torch.device) -> str:
    """triton on CUDA, native on the CPU, where available; reference otherwise."""
    preferred = "triton" if device.type == "cuda" else "native"
    return preferred if preferred in registered_backends() else "reference"


def get_op(name: str) -> BackendOp:
    """The differentiable op of backend ``name``: its custom op, or the same computation as an autograd.Function
    for eager calls (see :class:`~fdlinear.backends.registry.BackendOp`)."""
    return registered_backends()[name]
