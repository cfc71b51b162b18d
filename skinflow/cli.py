"""The ``skinflow`` command line.

- ``skinflow diagnose IMAGE... [--model DIR] [--k 6] [--json]``: caption and ranked diagnoses per image;
- ``skinflow synthetic N --out DIR [--seed S] [--label-noise P]``: the synthetic set as JSONL + PNGs + contact sheet;
- ``skinflow export JSONL OUT --stage caption|diagnosis [--format verl|trl] [--split S]``: training files.
"""

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

    synthetic = commands.add_parser("synthetic", help="write the synthetic data set as JSONL with PNG images")
    synthetic.add_argument("n", type=int, help="number of records")
    synthetic.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory")
    synthetic.add_argument("--seed", type=int, default=0, help="data set seed (default 0)")
    synthetic.add_argument("--label-noise", type=float, default=0.0, help="fraction of wrong labels (default 0)")

    export = commands.add_parser("export", help="export a JSONL data set for verl (parquet) or TRL (datasets dir)")
    export.add_argument("jsonl", type=Path, help="a JSONL data set (see docs/data.md)")
    export.add_argument("out", type=Path, help="output parquet file (verl) or directory (trl)")
    export.add_argument("--stage", choices=("caption", "diagnosis"), required=True)
    export.add_argument("--format", choices=("verl", "trl"), default="verl")
    export.add_argument("--split", choices=("train", "val", "test"), default=None, help="only this split")
    export.add_argument("--k", type=int, default=DEFAULT_K, help=f"diagnoses asked for (default {DEFAULT_K})")
    return parser


def _synthetic(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from skinflow.data.records import save_jsonl
    from skinflow.data.synthetic import contact_sheet, generate

    try:
        records = generate(args.n, seed=args.seed, label_noise=args.label_noise)
    except ValueError as error:
        parser.error(str(error))
    args.out.mkdir(parents=True, exist_ok=True)
    path = save_jsonl(records, args.out / "synthetic.jsonl", image_dir=args.out / "images")
    if records:
        contact_sheet(records[:32], args.out / "contact_sheet.png")
    print(f"wrote {len(records)} records to {path}")
    return 0


def _export(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from skinflow.data.export import to_trl_dataset, to_verl_parquet
    from skinflow.data.records import RecordError, load_jsonl

    if not args.jsonl.is_file():
        parser.error(f"JSONL must be a file, got {args.jsonl}")
    try:
        records = load_jsonl(args.jsonl)
    except RecordError as error:
        parser.error(str(error))
    records = [r for r in records if args.split is None or r["split"] == args.split]
    if args.format == "verl":
        to_verl_parquet(records, args.out, stage=args.stage, k=args.k)
    else:
        to_trl_dataset(records, stage=args.stage, k=args.k).save_to_disk(str(args.out))
    print(f"wrote {len(records)} {args.stage} rows to {args.out} ({args.format})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``skinflow`` console script; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "synthetic":
        return _synthetic(args, parser)
    if args.command == "export":
        return _export(args, parser)
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
