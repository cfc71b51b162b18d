"""Checkpoint directories in and out of verl (docs/verl.md).

    python -m skinflow.verl.convert tiny OUT [--seed S]            # the tiny default as an HF directory (smoke start)
    python -m skinflow.verl.convert dve SRC OUT [--blocks 16,17,...] [--projections gate_proj,...] [--num-bases K]
                                                                    # a Qwen2.5-VL checkpoint with the DVE applied
    python -m skinflow.verl.convert hf RUN OUT [--step N]          # verl's checkpoint -> HF directory

``hf`` reads ``RUN/global_step_N/actor/huggingface`` (the newest step, or ``--step``; RUN may also be a
``global_step_N`` directory, its ``actor`` directory or the ``huggingface`` directory itself), which verl writes when
``actor_rollout_ref.actor.checkpoint.save_contents`` holds ``hf_model`` (the recipes set it). The output is what
``skinflow diagnose --model``, ``skinflow evaluate --model`` and the next stage's ``MODEL`` read: safetensors
weights, ``config.json`` with ``vision_config.dve``, the processor. Every output is written to a temporary sibling
directory, reloaded with :func:`skinflow.model.load_pretrained` (every tensor must load) and compared tensor by
tensor with what was saved, then renamed into place: an interrupted conversion leaves no ``OUT``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_STEP = re.compile(r"^global_step_(\d+)$")

__all__ = ["export_hf", "find_hf_dir", "main", "save_model_dir", "write_dve", "write_tiny"]


def _has_weights(directory: Path) -> bool:
    return (directory / "model.safetensors").is_file() or (directory / "model.safetensors.index.json").is_file()


def find_hf_dir(run: str | os.PathLike[str], step: int | None = None) -> Path:
    """The ``huggingface`` directory of a verl checkpoint.

    Args:
        run: verl's ``trainer.default_local_dir`` (holding ``global_step_N``), a ``global_step_N`` directory, its
            ``actor`` directory, or a ``huggingface`` directory.
        step: the step to take from a run directory (default: the newest).

    Raises:
        FileNotFoundError: naming ``run`` (and the step) when there is no such checkpoint, or when verl saved no HF
            weights there (with the two ways to get them).
    """
    root = Path(run)
    label = f"checkpoint {str(run)!r}"
    if not root.is_dir():
        raise FileNotFoundError(f"{label}: not a directory")
    if (root / "config.json").is_file():
        candidate = root
    elif (root / "huggingface").is_dir():
        candidate = root / "huggingface"
    elif (root / "actor" / "huggingface").is_dir():
        candidate = root / "actor" / "huggingface"
    else:
        steps = {int(m.group(1)): path for path in root.iterdir() if (m := _STEP.match(path.name)) and path.is_dir()}
        if not steps:
            raise FileNotFoundError(f"{label}: no global_step_N directory, actor/huggingface or config.json in it")
        if step is None:
            step = max(steps)
        elif step not in steps:
            raise FileNotFoundError(f"{label}: no global_step_{step} (steps there: {sorted(steps)})")
        candidate = steps[step] / "actor" / "huggingface"
        if not candidate.is_dir():
            raise FileNotFoundError(f"{label}: global_step_{step} has no actor/huggingface directory")
    if not _has_weights(candidate):
        actor = candidate.parent
        raise FileNotFoundError(
            f"{label}: {candidate} holds no HF weights (model.safetensors): verl saves them when "
            "actor_rollout_ref.actor.checkpoint.save_contents holds hf_model (the recipes set it); for an existing "
            f"run, merge the FSDP shards first: python -m verl.model_merger merge --backend fsdp --local_dir {actor} "
            f"--target_dir {candidate}"
        )
    return candidate


def _fresh_output(out: str | os.PathLike[str]) -> Path:
    path = Path(out)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise FileExistsError(f"out: {str(out)!r} exists and is not an empty directory")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"out: the directory {str(path.parent)!r} does not exist")
    return path


def save_model_dir(model: Any, processor: Any, out: str | os.PathLike[str]) -> Path:
    """Save ``model`` and ``processor`` as an HF directory ``out``, atomically, checked by reloading.

    Args:
        model: a Qwen2.5-VL model (with or without DVE layers).
        processor: its processor (``save_pretrained``).
        out: a directory that does not exist yet (or is empty); its parent must exist.

    Returns:
        ``out`` as a ``Path``.

    Raises:
        FileExistsError, FileNotFoundError: naming ``out``.
        ValueError: the saved directory does not reload to the same tensors (nothing is left at ``out``).
    """
    import torch

    from skinflow.model import load_pretrained
    from skinflow.util import new_directory_mode

    path = _fresh_output(out)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        reloaded = load_pretrained(staging, name="out")
        saved = model.state_dict()
        for name, tensor in reloaded.state_dict().items():
            if name not in saved:
                continue  # a tied alias the model's state dict does not list
            if not torch.equal(tensor.to(saved[name].dtype), saved[name]):
                raise ValueError(f"out: {name} does not reload equal to the model's tensor")
        os.chmod(staging, new_directory_mode())
        if path.exists():
            path.rmdir()
        os.rename(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return path


def export_hf(run: str | os.PathLike[str], out: str | os.PathLike[str], step: int | None = None) -> Path:
    """A verl checkpoint (see :func:`find_hf_dir`) as an HF directory ``out`` (float32 weights, the processor).

    Raises ``FileNotFoundError``/``FileExistsError``/``ValueError`` naming the checkpoint or ``out``.
    """
    import torch

    from skinflow.model import load_pretrained
    from skinflow.model.processor import load_processor

    _fresh_output(out)
    source = find_hf_dir(run, step)
    model = load_pretrained(source, name="checkpoint", dtype=torch.float32)
    processor = load_processor(source, config=model.config, name="checkpoint")
    return save_model_dir(model, processor, out)


def write_tiny(out: str | os.PathLike[str], seed: int = 0) -> Path:
    """The embedded tiny default (random weights, DVE applied) as an HF directory ``out``."""
    from skinflow.model import tiny

    _fresh_output(out)
    model, processor = tiny.build(seed=seed)
    return save_model_dir(model, processor, out)


def write_dve(source: str | os.PathLike[str], out: str | os.PathLike[str], blocks: Sequence[int] | None = None,
              projections: Sequence[str] | None = None, num_bases: int | None = None) -> Path:
    """A local Qwen2.5-VL checkpoint with the DVE applied (outputs unchanged at init) as an HF directory ``out``.

    ``blocks``/``projections``/``num_bases``: see :func:`skinflow.model.apply_dve`.
    """
    import torch

    from skinflow.model import apply_dve, load_pretrained
    from skinflow.model.processor import load_processor

    _fresh_output(out)
    model = load_pretrained(source, name="source", dtype=torch.float32)
    processor = load_processor(source, config=model.config, name="source")
    apply_dve(model, blocks=blocks, projections=projections, num_bases=num_bases)
    return save_model_dir(model, processor, out)


def _ints(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected comma-separated block indices, got {text!r}") from error


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; exit status 2 with one line naming the bad input."""
    parser = argparse.ArgumentParser(prog="python -m skinflow.verl.convert", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    tiny_parser = commands.add_parser("tiny", help="the tiny default as an HF directory")
    tiny_parser.add_argument("out")
    tiny_parser.add_argument("--seed", type=int, default=0)
    dve_parser = commands.add_parser("dve", help="a Qwen2.5-VL checkpoint with the DVE applied")
    dve_parser.add_argument("source")
    dve_parser.add_argument("out")
    dve_parser.add_argument("--blocks", type=_ints, default=None)
    dve_parser.add_argument("--projections", type=_names, default=None)
    dve_parser.add_argument("--num-bases", type=int, default=None)
    hf_parser = commands.add_parser("hf", help="a verl checkpoint as an HF directory")
    hf_parser.add_argument("run")
    hf_parser.add_argument("out")
    hf_parser.add_argument("--step", type=int, default=None)
    args = parser.parse_args(argv)
    from skinflow.util import error_summary

    try:
        if args.command == "tiny":
            path = write_tiny(args.out, seed=args.seed)
        elif args.command == "dve":
            path = write_dve(args.source, args.out, args.blocks, args.projections, args.num_bases)
        else:
            path = export_hf(args.run, args.out, step=args.step)
    except (FileNotFoundError, FileExistsError, ValueError, TypeError) as error:
        message = str(error) if isinstance(error, FileNotFoundError | FileExistsError | ValueError) else \
            error_summary(error)
        print(f"error: {message.splitlines()[0] if message else type(error).__name__}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
