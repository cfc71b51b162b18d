"""Test session setup: tests import their helpers (op_cases, module_cases) from this folder, and triton's
interpreter is switched on before anything imports triton when no GPU is present."""

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
