"""Triton backend of the FDLinear op: fused forward and backward kernels (docs/design.md §2, docs/triton.md).

:func:`register` adds it to the backend registry as the custom ops ``fdlinear::triton_forward`` and
``fdlinear::triton_backward``. The kernels run on CUDA tensors, and on CPU tensors under the Triton
interpreter (``TRITON_INTERPRET=1``), which is how CI tests them.

Registering does not import triton: triton decides at its own import whether its language helpers are
interpreted, so ``import fdlinear`` must leave that to the first kernel call.
"""

from __future__ import annotations

import importlib.util


def register() -> None:
    """Register the ``"triton"`` backend; raises ImportError when triton is not installed."""
    if importlib.util.find_spec("triton") is None:
        raise ImportError("the triton backend of fdlinear needs the triton package (pip install triton)")
    from fdlinear.backends.registry import register_backend
    from fdlinear.backends.triton.op import backward, forward

    register_backend("triton", forward, backward)
