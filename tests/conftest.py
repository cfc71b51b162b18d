"""Test session setup: triton's interpreter is switched on before anything imports triton when no GPU is present.

The tests are packages mirroring the source tree (tests/fdlinear/..., tests/skinflow/...); shared helpers are
imported as modules of the package (``from tests.fdlinear.op_cases import ...``)."""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
