"""Build script: the fdlinear/skinflow packages (metadata in pyproject.toml) and the native extension
``fdlinear._native`` compiled from csrc/ with torch.utils.cpp_extension and ninja.

* torch without CUDA (or no CUDA toolkit): a CppExtension with the C++ CPU kernels.
* torch with CUDA and a toolkit (CUDA_HOME): a CUDAExtension that adds the CUDA kernels.
* no torch at build time, no compiler, or a failed compile: the pure-Python package installs anyway, with a
  warning; at run time fdlinear warns once and uses the other backends.

Build with ``pip install --no-build-isolation -e .`` so that the extension is compiled against the installed
torch. Environment: FDLINEAR_BUILD_NATIVE=0 skips the extension, FDLINEAR_BUILD_CUDA=0 builds CPU only,
MAX_JOBS caps ninja's parallel compile jobs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).parent
CSRC = ROOT / "csrc"
EXTENSION = "fdlinear._native"


def _log(message: str) -> None:
    print(f"fdlinear setup: {message}", file=sys.stderr)


def _sources(pattern: str) -> list[str]:
    return sorted(str(path.relative_to(ROOT)) for path in CSRC.rglob(pattern))


def _openmp_flags() -> list[str]:
    """The OpenMP flag matching torch's parallel backend (at::parallel_for is inlined into our code)."""
    import torch

    if not torch.backends.openmp.is_available():
        return []
    return ["/openmp"] if sys.platform == "win32" else ["-fopenmp"]


def native_extension():
    """(extension, build_ext class) for csrc/, or (None, None) when it cannot or should not be built."""
    if os.environ.get("FDLINEAR_BUILD_NATIVE", "1") == "0" or not CSRC.is_dir():
        return None, None
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError:
        _log("torch is not importable at build time (build isolation?); skipping the native extension")
        return None, None
    with_cuda = (
        torch.version.cuda is not None
        and cpp_extension.CUDA_HOME is not None
        and os.environ.get("FDLINEAR_BUILD_CUDA", "1") != "0"
    )
    openmp = _openmp_flags()
    # -g0: no debug info (it triples the compile time); the C++ standard is the one torch asks for.
    cxx_flags = ["/O2", *openmp] if sys.platform == "win32" else ["-O3", "-g0", *openmp]
    link_flags = openmp if sys.platform != "win32" else []
    sources = _sources("*.cpp")
    if with_cuda:
        extension = cpp_extension.CUDAExtension(
            EXTENSION,
            sources + _sources("*.cu"),
            extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3"]},
            extra_link_args=link_flags,
        )
    else:
        extension = cpp_extension.CppExtension(
            EXTENSION, sources, extra_compile_args={"cxx": cxx_flags}, extra_link_args=link_flags
        )
    _log(f"building {EXTENSION} with {'CUDA' if with_cuda else 'CPU'} kernels")
    return extension, _optional_build(cpp_extension.BuildExtension)


def _optional_build(base: type[build_ext]) -> type[build_ext]:
    """torch's BuildExtension (ninja) that warns instead of failing when the extension cannot be compiled."""

    class OptionalBuildExtension(base):
        def __init__(self, *args, **kwargs):
            kwargs.setdefault("use_ninja", True)
            super().__init__(*args, **kwargs)

        def run(self) -> None:
            try:
                super().run()
            except Exception as error:  # no compiler, a missing toolchain piece, or a compile error
                _log(
                    f"WARNING: the native extension {EXTENSION} was not built ({type(error).__name__}: {error}). "
                    "fdlinear installs as pure Python and falls back to the reference/triton backends."
                )

    return OptionalBuildExtension


extension, build_class = native_extension()
setup(
    ext_modules=[extension] if extension is not None else [],
    cmdclass={"build_ext": build_class} if build_class is not None else {},
)
