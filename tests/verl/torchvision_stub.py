"""A test-only stand-in for ``torchvision``, installed only where torchvision cannot be imported.

verl's RLHFDataset and agent loop take the images of a prompt through ``qwen_vl_utils.process_vision_info``, whose
module imports torchvision at the top (``from torchvision import io, transforms``), although its image path
(``fetch_image``, ``smart_resize``) uses PIL only; torchvision is needed for videos. The CPU machines of this project
have no torchvision build for their torch, so the tests put this module in its place: the names qwen_vl_utils
imports exist, and using any of them (a video path) raises ``RuntimeError``. On a machine with torchvision the real
one is used and nothing here is installed.
"""

import importlib.machinery
import importlib.util
import sys
import types


class _Unavailable:
    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attribute: str):
        raise RuntimeError(f"torchvision is not installed (test stand-in): {self._name}.{attribute} is unavailable")

    def __call__(self, *args, **kwargs):
        raise RuntimeError(f"torchvision is not installed (test stand-in): {self._name} is unavailable")


def _module(name: str, **attributes) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, loader=None)
    module.__dict__.update(attributes)

    def __getattr__(attribute: str):
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        return _Unavailable(f"{name}.{attribute}")

    module.__getattr__ = __getattr__
    return module


def install_if_missing() -> bool:
    """Put the stand-in into ``sys.modules`` when torchvision is not importable; ``True`` if it did."""
    if "torchvision" in sys.modules or importlib.util.find_spec("torchvision") is not None:
        return False
    # the libraries that probe for torchvision decide its absence before the stand-in exists
    import datasets  # noqa: F401
    import transformers.utils.import_utils  # noqa: F401

    transforms = _module("torchvision.transforms", InterpolationMode=_Unavailable("transforms.InterpolationMode"))
    io = _module("torchvision.io")
    torchvision = _module("torchvision", io=io, transforms=transforms, __version__="0.0.0+stand-in")
    torchvision._skinflow_test_stand_in = True
    sys.modules.update({"torchvision": torchvision, "torchvision.io": io, "torchvision.transforms": transforms})
    return True
