"""The ``skinflow`` command line: ``skinflow diagnose IMAGE... [--model DIR] [--k 6] [--json]``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from skinflow.formats import CAPTION_FIELDS, DEFAULT_K
from skinflow.inference import Diagnosis, ImageReadError, diagnose, read_image


def load_model(model_dir: Path | None, seed: int):
    """``(model, processor)``: a local checkpoint directory, or the embedded tiny default when ``None``."""
    if model_dir is None:
        from skinflow.tiny import build

        print("note: no --model given; using the embedded tiny default (random weights: its answers are not "
              "diagnoses)", file=sys.stderr)
        return build(seed=seed)
    from transformers import AutoProcessor

    from skinflow.dve import load_pretrained

    processor = AutoProcessor.from_pretrained(model_dir, local_files_only=True)
    return load_pretrained(model_dir).eval(), processor


def render(path: str, result: Diagnosis) -> str:
    """Human-readable report of one image's caption and candidates."""
    lines = [f"== {path}", "caption:"]
    lines += [f"  {field.replace('_', ' ')}: {result.caption[field]}" for field in CAPTION_FIELDS]
    lines.append("candidates:")
    if not result.candidates:
        lines.append("  (no diagnosis could be read from the answer)")
    for candidate in result.candidates:
        groups = f"  [{candidate.nine_group}; {candidate.three_group}]" if candidate.label else "  [not a known label]"
        lines.append(f"  {candidate.rank}. {candidate.label or candidate.text}{groups}")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="skinflow", description="SkinFlow: dermatological captioning and diagnosis.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("diagnose", help="caption and rank diagnoses for images")
    run.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    run.add_argument("--model", type=Path, default=None, metavar="DIR",
                     help="local Qwen2.5-VL / SkinFlow checkpoint directory (default: the embedded tiny model)")
    run.add_argument("--k", type=int, default=DEFAULT_K, help=f"number of ranked diagnoses (default {DEFAULT_K})")
    run.add_argument("--batch-size", type=int, default=8, help="images per generation batch (default 8)")
    run.add_argument("--seed", type=int, default=0, help="initialisation seed of the tiny default (default 0)")
    run.add_argument("--json", action="store_true", help="print one JSON object per image instead of text")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``skinflow`` console script; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.k < 1:
        parser.error(f"--k must be a positive integer, got {args.k}")
    if args.batch_size < 1:
        parser.error(f"--batch-size must be a positive integer, got {args.batch_size}")
    if args.model is not None and not (args.model / "config.json").is_file():
        parser.error(f"--model must be a checkpoint directory with a config.json, got {args.model}")
    try:
        images = [read_image(path, "IMAGE") for path in args.images]
    except ImageReadError as error:
        parser.error(str(error))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model, processor = load_model(args.model, args.seed)
    results = diagnose(model, processor, images, k=args.k, batch_size=args.batch_size)
    for path, result in zip(args.images, results):
        if args.json:
            print(json.dumps({"image": path, **result.to_dict()}, ensure_ascii=False))
        else:
            print(render(path, result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
