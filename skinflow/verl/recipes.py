"""The verl recipes (``recipes/verl/*.yaml``) as verl command lines, and their launcher (docs/verl.md).

A recipe is a YAML mapping with ``description``, ``variables`` (name -> default, ``null`` for a required one) and
``overrides``: Hydra overrides of verl's ``ppo_trainer`` config in which ``{NAME}`` stands for a variable. Only the
free-form mappings of :data:`ADDABLE` may get new keys (``+``): every other override must name a key verl's config has (``tests/verl`` composes every recipe with verl's own Hydra config to check it).

    python -m skinflow.verl.recipes recipes/verl/qwen2_5_vl_7b_stage1_caption.yaml MODEL=... TRAIN=... VAL=... \\
        [-- more.overrides=value ...]          # runs python -m verl.trainer.main_ppo with the overrides
    python -m skinflow.verl.recipes RECIPE ... --print                            # prints the command instead

Pure Python (YAML only): importing it loads neither verl nor torch.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENTRY = ("-m", "verl.trainer.main_ppo")
ADDABLE = ("reward.custom_reward_function.reward_kwargs.", "actor_rollout_ref.model.override_config.")
"""Prefixes under which a recipe may add keys (``+key=value``): the reward's settings (skinflow.rewards.config) and
the model's config overrides (free-form mappings in verl's config)."""
_VARIABLE = re.compile(r"\{([A-Z][A-Z0-9_]*)\}")
_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")

__all__ = ["Recipe", "RecipeError", "load_recipe", "main"]


class RecipeError(ValueError):
    """A recipe file or a variable that cannot be used; the message names the file and the key or variable."""


@dataclass(frozen=True)
class Recipe:
    """One verl recipe.

    Attributes:
        path: the YAML file.
        description: what it runs.
        variables: name -> default (``None``: required).
        overrides: Hydra overrides with ``{NAME}`` placeholders.
    """

    path: Path
    description: str
    variables: dict[str, str | None]
    overrides: tuple[str, ...]

    def resolve(self, values: Mapping[str, str] | None = None, extra: Sequence[str] = ()) -> list[str]:
        """The overrides with every ``{NAME}`` replaced, then ``extra`` appended (Hydra: later wins).

        Args:
            values: variable values (``NAME -> str``); defaults fill the rest.
            extra: further overrides, passed as they are.

        Raises:
            RecipeError: an unknown variable, a required one left unset, or an empty value.
        """
        values = dict(values or {})
        unknown = sorted(set(values) - set(self.variables))
        if unknown:
            raise RecipeError(f"{self.path}: unknown variables {unknown}; this recipe has {sorted(self.variables)}")
        merged = {name: values.get(name, default) for name, default in self.variables.items()}
        missing = sorted(name for name, value in merged.items() if value is None)
        if missing:
            raise RecipeError(f"{self.path}: set the required variables {missing} (e.g. {missing[0]}=...)")
        empty = sorted(name for name, value in merged.items() if not str(value))
        if empty:
            raise RecipeError(f"{self.path}: variables {empty} are empty")
        resolved = [_VARIABLE.sub(lambda match: str(merged[match.group(1)]), override) for override in self.overrides]
        return resolved + list(extra)

    def command(self, values: Mapping[str, str] | None = None, extra: Sequence[str] = ()) -> list[str]:
        """``[python, -m, verl.trainer.main_ppo, *overrides]``."""
        return [sys.executable, *ENTRY, *self.resolve(values, extra)]


def _check_override(path: Path, index: int, override: object, variables: Mapping[str, Any]) -> str:
    where = f"{path}: overrides[{index}]"
    if not isinstance(override, str) or "=" not in override:
        raise RecipeError(f"{where} must be a 'key=value' string, got {override!r}")
    key = override.split("=", 1)[0]
    if key.startswith("~"):
        raise RecipeError(f"{where}: deleting keys ({key}) is not allowed in a recipe")
    if key.startswith("+"):
        if not key.lstrip("+").startswith(ADDABLE):
            raise RecipeError(f"{where}: only keys under {ADDABLE} may be added with '+', got {key}")
    elif key.startswith(ADDABLE):
        raise RecipeError(f"{where}: {key} is not in verl's config; add it with '+{key}'")
    for name in _VARIABLE.findall(override):
        if name not in variables:
            raise RecipeError(f"{where} uses {{{name}}}, which is not among the recipe's variables")
    return override


def load_recipe(path: str | os.PathLike[str]) -> Recipe:
    """Read and check a recipe YAML file.

    Raises:
        FileNotFoundError: no such file.
        RecipeError: not a mapping with ``description`` (str), ``variables`` (mapping of UPPER_CASE names to a string,
            number or null) and ``overrides`` (a list of ``key=value`` strings whose ``{NAME}`` are variables), or an
            unknown top-level key.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"recipe: no such file {str(path)!r}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise RecipeError(f"{path}: not valid YAML ({error})") from error
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: must hold a mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - {"description", "variables", "overrides"})
    if unknown:
        raise RecipeError(f"{path}: unknown keys {unknown} (allowed: description, variables, overrides)")
    description = data.get("description")
    if not isinstance(description, str) or not description:
        raise RecipeError(f"{path}: description must be a non-empty string")
    variables = data.get("variables") or {}
    if not isinstance(variables, dict):
        raise RecipeError(f"{path}: variables must be a mapping of NAME: default")
    checked: dict[str, str | None] = {}
    for name, default in variables.items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise RecipeError(f"{path}: variable names are UPPER_CASE, got {name!r}")
        if default is not None and (isinstance(default, bool) or not isinstance(default, str | int | float)):
            raise RecipeError(f"{path}: variables.{name} must be a string, a number or null, got {default!r}")
        checked[name] = None if default is None else str(default)
    overrides = data.get("overrides")
    if not isinstance(overrides, list) or not overrides:
        raise RecipeError(f"{path}: overrides must be a non-empty list of 'key=value' strings")
    checked_overrides = tuple(_check_override(path, i, o, checked) for i, o in enumerate(overrides))
    keys = [o.split("=", 1)[0].lstrip("+") for o in checked_overrides]
    twice = sorted({key for key in keys if keys.count(key) > 1})
    if twice:
        raise RecipeError(f"{path}: keys set more than once: {twice}")
    return Recipe(path, description, checked, checked_overrides)


def _parse(argv: Sequence[str]) -> tuple[argparse.Namespace, dict[str, str], list[str]]:
    argv = list(argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    parser = argparse.ArgumentParser(prog="python -m skinflow.verl.recipes",
                                     description="Run a verl recipe (recipes/verl/*.yaml): verl.trainer.main_ppo "
                                                 "with its overrides. Overrides after -- are appended.")
    parser.add_argument("recipe", help="the recipe YAML file")
    parser.add_argument("variables", nargs="*", metavar="NAME=VALUE", help="values of the recipe's variables")
    parser.add_argument("--print", action="store_true", dest="print_only", help="print the command, do not run it")
    args = parser.parse_args(argv)
    values: dict[str, str] = {}
    for item in args.variables:
        name, sep, value = item.partition("=")
        if not sep or not _NAME.match(name):
            parser.error(f"variables are NAME=VALUE with an UPPER_CASE name, got {item!r}")
        values[name] = value
    return args, values, extra


def main(argv: Sequence[str] | None = None) -> int:
    """The launcher: exit status 2 with one line for a bad recipe or variable; otherwise runs verl (exec)."""
    args, values, extra = _parse(sys.argv[1:] if argv is None else argv)
    try:
        command = load_recipe(args.recipe).command(values, extra)
    except (FileNotFoundError, RecipeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.print_only:
        print(shlex.join(command))
        return 0
    os.execv(command[0], command)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
