"""Fixtures of the verl tests: the tiny default as a checkpoint directory, verl parquet files of both stages, and
verl's composed configs of the recipes.

These tests need verl (build/venv-verl, made by ``make test-verl``, which sets ``SKINFLOW_VERL_TESTS=1``). Without
that variable the directory is not collected, so ``pytest tests`` in the main environment (no verl) is unaffected;
with it, a missing verl is an error, never a skip.
"""

import os
from pathlib import Path

import pytest

from tests import REPO

RECIPES = REPO / "recipes" / "verl"
ENABLED = os.environ.get("SKINFLOW_VERL_TESTS") == "1"

if not ENABLED:
    collect_ignore_glob = ["test_*.py"]
else:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import verl  # noqa: F401  (fails loudly in the verl test environment when missing)

    from tests.verl import torchvision_stub

    torchvision_stub.install_if_missing()


def recipe_paths() -> list[Path]:
    """Every recipe of recipes/verl."""
    return sorted(RECIPES.glob("*.yaml"))


def compose_recipe(path: Path, values: dict | None = None, extra: tuple = ()):
    """verl's ``ppo_trainer`` config composed with the recipe's overrides (Hydra raises on any unknown key)."""
    from hydra import compose, initialize_config_module

    from skinflow.verl.recipes import load_recipe

    recipe = load_recipe(path)
    filled = {name: f"/nonexistent/{name.lower()}" for name, default in recipe.variables.items() if default is None}
    filled.update(values or {})
    with initialize_config_module(config_module="verl.trainer.config", version_base=None):
        return compose(config_name="ppo_trainer", overrides=recipe.resolve(filled, extra))


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    """The tiny default (seed 0, DVE) saved as an HF checkpoint directory."""
    from skinflow.verl.convert import write_tiny

    return write_tiny(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def records():
    """12 synthetic records (the train split and a few others)."""
    from skinflow.data.synthetic import generate

    return generate(12, seed=3, progress=False)


@pytest.fixture(scope="session")
def parquet_files(tmp_path_factory, records) -> dict[str, Path]:
    """``{"caption": path, "diagnosis": path}``: verl parquet files of all records, from skinflow's exporter."""
    from skinflow.data.export import to_verl_parquet

    directory = tmp_path_factory.mktemp("parquet")
    return {stage: to_verl_parquet(records, directory / f"{stage}.parquet", stage, progress=False)
            for stage in ("caption", "diagnosis")}
