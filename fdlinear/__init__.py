"""fdlinear: frequency-disjoint dynamic linear layers with fused kernels.

``FDLinear`` is a drop-in ``nn.Linear`` whose weight is rebuilt per sample from K
frequency-disjoint spectral bases; ``fdlinear.functional.fdlinear`` is the op underneath.
"""

from fdlinear.backends import available_backends
from fdlinear.functional import fdlinear
from fdlinear.module import FDLinear

__all__ = ["FDLinear", "available_backends", "fdlinear"]
__version__ = "0.1.0"
