"""The ``skinflow`` command line.

- ``skinflow diagnose IMAGE... [--model DIR] [--k 6] [--json]``: caption and ranked diagnoses per image;
- ``skinflow synthetic N --out DIR [--seed S] [--label-noise P]``: the synthetic set as JSONL + PNGs + lesion masks
  + contact sheet;
- ``skinflow export JSONL OUT --stage caption|diagnosis [--format verl|trl] [--split S]``: training files;
- ``skinflow predict --data JSONL --out PREDICTIONS [--model DIR] [--split S] [--k 6] [--batch-size 8]``: the
  predictions file of a model over a data set (resumable; docs/evaluation.md);
- ``skinflow train sft|caption|diagnosis --data JSONL --out DIR [--model DIR] [--config YAML] [--max-steps N]
  [--resume] [--dve/--no-dve]``: one training stage on TRL (docs/training.md);
- ``skinflow demo --out DIR [--config YAML] [--arm full]`` and ``skinflow ablate --out DIR [--seeds 0,1,2]``: the
  whole pipeline on the embedded default, and the paper's ablation on it (docs/demo.md);
- ``skinflow evaluate PREDICTIONS --out DIR [--bootstrap 1000] [--seed 0]``: report.json, report.md and plots;
  ``skinflow evaluate --data JSONL [--model DIR] --out DIR``: both steps (predictions in DIR/predictions.jsonl).

Bad input has one exit path: exit status 2 and one line on stderr, ``skinflow <command>: error: <what>``, naming the
argument or file (argparse's own errors included). Every command runs its input-dependent steps inside
:func:`user_input`, which turns the ``ValueError``/``OSError`` of the library functions into a :class:`UserError`,
and :func:`main` reports a ``UserError`` in that one line. Any other exception is a bug and keeps its traceback;
``SKINFLOW_TRACEBACK=1`` shows the traceback of user errors too.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from skinflow.formats import CAPTION_FIELDS, DEFAULT_K

if TYPE_CHECKING:
    from skinflow.model.inference import Diagnosis

EXIT_USER_ERROR = 2
_MAX_ERROR_LINES = 4
_MAX_ERROR_CHARS = 2000


class UserError(Exception):
    """Bad input on the command line: reported by :func:`main` as one line on stderr with exit status 2."""


def one_line(message: str, max_lines: int = _MAX_ERROR_LINES, max_chars: int = _MAX_ERROR_CHARS) -> str:
    """``message`` on one line: its lines joined with ``; `` (the first ``max_lines``, then how many more)."""
    lines = [" ".join(line.split()) for line in str(message).splitlines()]
    lines = [line for line in lines if line]
    if len(lines) > max_lines:
        lines = [*lines[:max_lines], f"... and {len(lines) - max_lines} more"]
    text = ""
    for line in lines:
        text += line if not text else (" " if text.endswith(":") else "; ") + line
    text = text or "unknown error"
    return text if len(text) <= max_chars else text[: max_chars - 3] + "..."


@contextlib.contextmanager
def user_input() -> Iterator[None]:
    """Run a step that depends only on the user's input: its ``ValueError``/``OSError`` become a :class:`UserError`.

    The library functions raise those (``ImageReadError``, ``RecordError``, ``FileNotFoundError``, ...) with a
    message naming the argument or file.
    """
    try:
        yield
    except (ValueError, OSError) as error:
        message = str(error) if str(error).strip() else type(error).__name__
        if isinstance(error, OSError) and error.filename is not None and str(error.filename) not in message:
            message = f"{error.filename!r}: {message}"
        raise UserError(message) from error


class _Parser(argparse.ArgumentParser):
    """argparse with its errors on one line (no usage block): ``skinflow diagnose: error: ...``, exit status 2."""

    def error(self, message: str):
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {one_line(message)}\n")


def _integer(text: str, low: int, high: int | None, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
    if value < low or (high is not None and value >= high):
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an int >= 1."""
    return _integer(text, 1, None, "a positive integer")


def non_negative_int(text: str) -> int:
    """argparse type: an int >= 0."""
    return _integer(text, 0, None, "a non-negative integer")


def seed_int(text: str) -> int:
    """argparse type: an int in [0, 2**32)."""
    return _integer(text, 0, 2**32, "an integer in [0, 2**32)")


def unit_fraction(text: str) -> float:
    """argparse type: a finite float in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1), got {text!r}") from None
    if not (math.isfinite(value) and 0.0 <= value < 1.0):
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1), got {text!r}")
    return value


def _progress() -> bool:
    """Progress bars on stderr only for a person at a terminal: logs and pipes get one line per error, nothing else."""
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def _shown(text: str) -> str:
    """``text`` (a path from the command line) printable on any stdout: undecodable bytes as ``\\x..`` escapes."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def load_model(model_dir: Path | None, seed: int):
    """``(model, processor)``: a local checkpoint directory, or the embedded tiny default when ``None``.

    A directory is checked (config, weights, tokenizer and processor files) and loaded from local files only:
    ``FileNotFoundError``/``ValueError`` naming ``--model`` and the directory when it cannot be used.
    """
    if model_dir is None:
        return _tiny(seed)
    from skinflow.model.dve import check_checkpoint
    from skinflow.model.processor import load_processor

    processor = load_processor(model_dir, config=check_checkpoint(model_dir, name="--model"), name="--model")
    return _checkpoint_model(model_dir), processor


def _tiny(seed: int):
    from skinflow.model.tiny import build

    print("note: no --model given; using the embedded tiny default (random weights: its answers are not "
          "diagnoses)", file=sys.stderr)
    return build(seed=seed)


def _checkpoint_model(model_dir: Path):
    from skinflow.model.dve import load_pretrained

    return _quietly(lambda: load_pretrained(model_dir, name="--model")).eval()


def _quietly(load):
    """Run ``load`` with transformers' warnings and progress bars off (so that a failure prints one line)."""
    from transformers.utils import logging

    verbosity, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        return load()
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()


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
    parser = _Parser(prog="skinflow", description="SkinFlow: dermatological captioning and diagnosis.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("diagnose", help="caption and rank diagnoses for images")
    run.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    run.add_argument("--model", type=Path, default=None, metavar="DIR",
                     help="local Qwen2.5-VL / SkinFlow checkpoint directory (default: the embedded tiny model)")
    run.add_argument("--k", type=positive_int, default=DEFAULT_K,
                     help=f"number of ranked diagnoses (default {DEFAULT_K})")
    run.add_argument("--batch-size", type=positive_int, default=8, help="images per generation batch (default 8)")
    run.add_argument("--seed", type=seed_int, default=0, help="initialisation seed of the tiny default (default 0)")
    run.add_argument("--json", action="store_true", help="print one JSON object per image instead of text")

    synthetic = commands.add_parser("synthetic", help="write the synthetic data set as JSONL with PNG images")
    synthetic.add_argument("n", type=non_negative_int, help="number of records")
    synthetic.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory")
    synthetic.add_argument("--seed", type=seed_int, default=0, help="data set seed (default 0)")
    synthetic.add_argument("--label-noise", type=unit_fraction, default=0.0, help="fraction of wrong labels (default 0)")

    export = commands.add_parser("export", help="export a JSONL data set for verl (parquet) or TRL (datasets dir)")
    export.add_argument("jsonl", type=Path, metavar="JSONL", help="a JSONL data set (see docs/data.md)")
    export.add_argument("out", type=Path, metavar="OUT", help="output parquet file (verl) or new directory (trl)")
    export.add_argument("--stage", choices=("caption", "diagnosis"), required=True)
    export.add_argument("--format", choices=("verl", "trl"), default="verl")
    export.add_argument("--split", choices=("train", "val", "test"), default=None, help="only this split")
    export.add_argument("--k", type=positive_int, default=DEFAULT_K,
                        help=f"diagnoses asked for (default {DEFAULT_K})")

    predict = commands.add_parser("predict", help="run a model over a JSONL data set and write its predictions file")
    _add_prediction_options(predict)
    predict.add_argument("--out", type=Path, required=True, metavar="PREDICTIONS",
                         help="the predictions JSONL file to write (resumed when a partial run left one)")
    predict.add_argument("--seed", type=seed_int, default=0, help="initialisation seed of the tiny default (default 0)")

    evaluate = commands.add_parser("evaluate", help="score a predictions file (or a model on --data) into a report")
    evaluate.add_argument("predictions", type=Path, nargs="?", default=None, metavar="PREDICTIONS",
                          help="a predictions JSONL file (docs/design.md §3b); or give --data to predict first")
    _add_prediction_options(evaluate, data_required=False, k_default=None)
    evaluate.add_argument("--out", type=Path, required=True, metavar="DIR", help="report directory (created)")
    evaluate.add_argument("--bootstrap", type=non_negative_int, default=1000,
                          help="bootstrap resamples per confidence interval (default 1000; 0: no intervals)")
    evaluate.add_argument("--seed", type=seed_int, default=0, help="bootstrap seed (default 0)")
    evaluate.add_argument("--no-plots", action="store_true", help="write report.json and report.md only")

    attention = commands.add_parser("attention", help="attention of the answers to the image tokens, binned")
    _add_prediction_options(attention)
    attention.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory (created)")
    attention.add_argument("--stage", choices=("diagnosis", "caption"), default="diagnosis",
                           help="which answer to analyse (default diagnosis)")
    attention.add_argument("--limit", type=positive_int, default=None, help="only the first N records")
    attention.add_argument("--overlays", type=non_negative_int, default=8,
                           help="heat-map overlays for the first N records (default 8)")
    attention.add_argument("--seed", type=seed_int, default=0, help="initialisation seed of the tiny default (default 0)")

    train = commands.add_parser("train", help="train a stage on TRL: sft warm start, caption (I) or diagnosis (II) GRPO")
    train.add_argument("stage", choices=("sft", "caption", "diagnosis"), help="the stage to train")
    train.add_argument("--data", type=Path, required=True, metavar="JSONL", help="a JSONL data set (docs/data.md)")
    train.add_argument("--out", type=Path, required=True, metavar="DIR",
                       help="output directory: final model, checkpoint-N, run.json, metrics.jsonl")
    train.add_argument("--model", type=Path, default=None, metavar="DIR",
                       help="checkpoint to start from (default: the embedded tiny model; Stage II: Stage I's DIR)")
    train.add_argument("--config", type=Path, default=None, metavar="YAML", help="a recipe (recipes/*.yaml)")
    train.add_argument("--max-steps", type=positive_int, default=None, help="optimizer steps (overrides the recipe)")
    train.add_argument("--resume", action="store_true", help="continue from the last checkpoint-N of --out")
    train.add_argument("--dve", action=argparse.BooleanOptionalAction, default=None,
                       help="use the Dynamic Vision Encoder (default: the recipe's, else on)")
    train.add_argument("--dve-blocks", type=_int_list, default=None, metavar="I,J,...", help="DVE vision blocks")
    train.add_argument("--dve-projections", type=_name_list, default=None, metavar="NAME,...",
                       help="DVE projections among qkv, proj, gate_proj, up_proj, down_proj")
    train.add_argument("--num-bases", type=positive_int, default=None, metavar="K", help="DVE frequency bases K")
    train.add_argument("--seed", type=seed_int, default=None, help="seed of the run (default: the recipe's, else 0)")

    demo = commands.add_parser("demo", help="the whole pipeline on the embedded default: data, warm start, Stage I, "
                                            "Stage II, evaluation (docs/demo.md)")
    demo.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory (finished stages are reused)")
    demo.add_argument("--config", type=Path, default=Path("recipes/pipeline/demo.yaml"), metavar="YAML",
                      help="pipeline recipe (default recipes/pipeline/demo.yaml)")
    demo.add_argument("--arm", choices=("full", "stage1+2", "stage2-only", "dve-no-stage1"), default="full",
                      help="which ablation arm to run (default full)")
    demo.add_argument("--seed", type=seed_int, default=None, help="model seed (default: the recipe's)")

    ablate = commands.add_parser("ablate", help="train and evaluate the paper's ablation arms over seeds "
                                                "(resumable; docs/demo.md)")
    ablate.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory (finished stages are reused)")
    ablate.add_argument("--config", type=Path, default=Path("recipes/pipeline/demo.yaml"), metavar="YAML",
                        help="pipeline recipe (default recipes/pipeline/demo.yaml)")
    ablate.add_argument("--seeds", type=_int_list, default=[0, 1, 2], metavar="S,S,...", help="model seeds (default 0,1,2)")
    ablate.add_argument("--arms", type=_name_list, default=None, metavar="ARM,...",
                        help="arms (default all: stage2-only, stage1+2, full, dve-no-stage1)")
    ablate.add_argument("--jobs", type=positive_int, default=1, metavar="N",
                        help="seeds run at once, one process of config.threads threads each (default 1)")
    return parser


def _add_prediction_options(command: argparse.ArgumentParser, data_required: bool = True,
                            k_default: int | None = DEFAULT_K) -> None:
    command.add_argument("--model", type=Path, default=None, metavar="DIR",
                         help="local Qwen2.5-VL / SkinFlow checkpoint directory (default: the embedded tiny model)")
    command.add_argument("--data", type=Path, required=data_required, default=None, metavar="JSONL",
                         help="a JSONL data set (see docs/data.md)")
    command.add_argument("--split", choices=("train", "val", "test"), default=None, help="only this split")
    command.add_argument("--k", type=positive_int, default=k_default,
                         help=f"diagnoses asked for and read (default {DEFAULT_K}; evaluate of PREDICTIONS: the "
                              "rows' k)")
    command.add_argument("--batch-size", type=positive_int, default=8, help="images per generation batch (default 8)")
    command.add_argument("--max-new-tokens", type=positive_int, default=160,
                         help="generation budget per answer (default 160)")


def _diagnose(args: argparse.Namespace) -> int:
    from skinflow.model.inference import diagnose, read_image

    with user_input():
        # everything that can be wrong with the input is found before any weights load
        if args.model is None:
            from skinflow.model.tiny import build_image_processor

            image_processor = build_image_processor()
            images = [read_image(path, "IMAGE", image_processor) for path in args.images]
        else:
            from skinflow.model.dve import check_checkpoint
            from skinflow.model.processor import load_processor

            config = check_checkpoint(args.model, name="--model")
            processor = load_processor(args.model, config=config, name="--model")
            images = [read_image(path, "IMAGE", processor.image_processor) for path in args.images]
            model = _checkpoint_model(args.model)
    if args.model is None:
        model, processor = _tiny(args.seed)
    results = diagnose(model, processor, images, k=args.k, batch_size=args.batch_size)
    for path, result in zip(args.images, results):
        if args.json:
            print(json.dumps({"image": _shown(path), **result.to_dict()}, ensure_ascii=False))
        else:
            print(render(_shown(path), result))
    return 0


def _synthetic(args: argparse.Namespace) -> int:
    from skinflow.data.synthetic import contact_sheet, generate, save

    with user_input():
        if args.out.exists() and not args.out.is_dir():
            raise UserError(f"--out {str(args.out)!r}: exists and is not a directory")
        created = not args.out.exists()
        args.out.mkdir(parents=True, exist_ok=True)  # before the work: a bad --out fails at once
        try:
            records = generate(args.n, seed=args.seed, label_noise=args.label_noise, progress=_progress())
            path = save(records, args.out / "synthetic.jsonl", image_dir=args.out / "images", progress=_progress())
            if records:
                contact_sheet(records[:32], args.out / "contact_sheet.png")
        except BaseException:
            if created and not any(args.out.iterdir()):
                args.out.rmdir()
            raise
    print(f"wrote {len(records)} records to {path}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from skinflow.data.export import save_trl_dataset, to_verl_parquet
    from skinflow.data.records import load_jsonl

    with user_input():
        if not args.jsonl.is_file():
            raise UserError(f"JSONL {str(args.jsonl)!r}: " + ("is a directory, not a file" if args.jsonl.is_dir()
                                                            else "no such file"))
        out = f"OUT {str(args.out)!r}"
        if not args.out.parent.is_dir():
            raise UserError(f"{out}: directory {str(args.out.parent)!r} does not exist")
        if args.out.exists() and args.out.resolve() == args.jsonl.resolve():
            raise UserError(f"{out}: is the input JSONL; writing it would destroy the data set")
        if args.format == "verl" and args.out.is_dir():
            raise UserError(f"{out}: is a directory; verl needs a parquet file name")
        if args.format == "trl" and args.out.exists() and not (args.out.is_dir() and not any(args.out.iterdir())):
            raise UserError(f"{out}: exists (TRL needs a new or empty directory)")
        records = load_jsonl(args.jsonl, progress=_progress())
        records = [r for r in records if args.split is None or r["split"] == args.split]
        if args.format == "verl":
            to_verl_parquet(records, args.out, stage=args.stage, k=args.k, progress=_progress())
        else:
            save_trl_dataset(records, args.out, stage=args.stage, k=args.k, progress=_progress())
    print(f"wrote {len(records)} {args.stage} rows to {_shown(str(args.out))} ({args.format})")
    return 0


def _load_data(args: argparse.Namespace) -> list[dict]:
    """The records of ``--data`` (checked, images decoded), only ``--split`` when given; a UserError otherwise."""
    from skinflow.data.records import load_jsonl

    if not args.data.is_file():
        raise UserError(f"--data {str(args.data)!r}: " + ("is a directory, not a file" if args.data.is_dir()
                                                          else "no such file"))
    records = load_jsonl(args.data, progress=_progress())
    records = [r for r in records if args.split is None or r["split"] == args.split]
    if not records:
        where = f" in split {args.split!r}" if args.split else ""
        raise UserError(f"--data {str(args.data)!r}: no records{where}")
    return records


def _check_model(args: argparse.Namespace, records: list[dict]):
    """The processor of ``--model`` (checked before any weights load), or ``None`` for the tiny default; and every
    record's image checked against that processor's limits."""
    from skinflow.eval.predict import check_record_images

    if args.model is None:
        from skinflow.model.tiny import build_image_processor

        check_record_images(records, build_image_processor())
        return None
    from skinflow.model.dve import check_checkpoint
    from skinflow.model.processor import load_processor

    processor = load_processor(args.model, config=check_checkpoint(args.model, name="--model"), name="--model")
    check_record_images(records, processor.image_processor)
    return processor


def _run_predictions(args: argparse.Namespace, records: list[dict], processor, out: Path, seed: int) -> Path:
    from skinflow.eval.predict import predict

    if args.model is None:
        model, processor = _tiny(seed)
        name = f"tiny-default(seed={seed})"
    else:
        with user_input():
            model = _checkpoint_model(args.model)
        name = str(args.model)
    with user_input():  # an image the processor refuses names its record
        return predict(model, processor, records, out, k=args.k, batch_size=args.batch_size,
                       max_new_tokens=args.max_new_tokens, model_name=name, progress=_progress())


def _predict(args: argparse.Namespace) -> int:
    with user_input():
        out = f"--out {str(args.out)!r}"
        if not args.out.parent.is_dir():
            raise UserError(f"{out}: directory {str(args.out.parent)!r} does not exist")
        if args.out.is_dir():
            raise UserError(f"{out}: is a directory; give the predictions file's name")
        if args.data.exists() and args.out.exists() and args.out.resolve() == args.data.resolve():
            raise UserError(f"{out}: is the input JSONL; writing it would destroy the data set")
        records = _load_data(args)
        processor = _check_model(args, records)
    path = _run_predictions(args, records, processor, args.out, args.seed)
    print(f"wrote {len(records)} predictions to {_shown(str(path))}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from skinflow.eval.metrics import EvalSettings
    from skinflow.eval.report import evaluate_predictions, output_directory

    with user_input():
        if (args.predictions is None) == (args.data is None):
            raise UserError("give either PREDICTIONS or --data JSONL (to predict first), not both" if args.data
                            else "give PREDICTIONS or --data JSONL")
        if args.predictions is not None and args.model is not None:
            raise UserError("--model needs --data (PREDICTIONS are already answered)")
        if args.out.exists() and not args.out.is_dir():
            raise UserError(f"--out {str(args.out)!r}: exists and is not a directory")
        if not args.out.exists() and not args.out.parent.is_dir():
            raise UserError(f"--out {str(args.out)!r}: directory {str(args.out.parent)!r} does not exist")
        settings = EvalSettings(k=args.k, bootstrap=args.bootstrap, seed=args.seed)
        if args.predictions is not None:
            predictions, data = args.predictions, {}  # every row is checked before --out is created
        else:
            records = _load_data(args)
            processor = _check_model(args, records)
            output_directory(args.out)
            predictions = args.out / "predictions.jsonl"
            data = {"dataset": str(args.data), "split": args.split}
    if args.predictions is None:
        args.k = DEFAULT_K if args.k is None else args.k
        _run_predictions(args, records, processor, predictions, 0)
    with user_input():
        report = evaluate_predictions(predictions, args.out, settings, plots=not args.no_plots, data=data,
                                      split=args.split if args.predictions is not None else None)
    k = report["k"]
    print(f"evaluated {report['n']} predictions: top-1 {report['topk']['synonym'][0]:.3f}, "
          f"top-{k} {report['topk']['synonym'][k - 1]:.3f} (synonym level); report in {_shown(str(args.out))}")
    return 0


def _attention(args: argparse.Namespace) -> int:
    from skinflow.eval.attention import attention_analysis
    from skinflow.eval.report import output_directory

    with user_input():
        if args.out.exists() and not args.out.is_dir():
            raise UserError(f"--out {str(args.out)!r}: exists and is not a directory")
        if not args.out.exists() and not args.out.parent.is_dir():
            raise UserError(f"--out {str(args.out)!r}: directory {str(args.out.parent)!r} does not exist")
        records = _load_data(args)[: args.limit]
        processor = _check_model(args, records)
        if args.model is not None:
            model, name = _checkpoint_model(args.model), str(args.model)
    if args.model is None:
        model, processor = _tiny(args.seed)
        name = f"tiny-default(seed={args.seed})"
    with user_input():
        out = output_directory(args.out)
        summary = attention_analysis(model, processor, records, out, stage=args.stage, k=args.k,
                                     max_new_tokens=args.max_new_tokens, overlays=args.overlays, model_name=name)
    bins = ", ".join(f"{key}: {value:.3f}" for key, value in summary["bins"].items())
    print(f"analysed {summary['analysed']} of {summary['records']} answers; weights per bin: {bins}; "
          f"written to {_shown(str(args.out))}")
    return 0


COMMANDS = {"diagnose": _diagnose, "synthetic": _synthetic, "export": _export, "predict": _predict,
            "evaluate": _evaluate, "attention": _attention}


def _int_list(text: str) -> list[int]:
    """argparse type of ``--dve-blocks``: comma-separated non-negative ints."""
    return [non_negative_int(part.strip()) for part in text.split(",") if part.strip()]


def _name_list(text: str) -> list[str]:
    """argparse type of ``--dve-projections``: comma-separated names."""
    return [part.strip() for part in text.split(",") if part.strip()]


def _train(args: argparse.Namespace) -> int:
    from skinflow.train import TrainConfig, load_config
    from skinflow.train.runner import prepare, train

    overrides = {"stage": args.stage, "data": str(args.data), "out": str(args.out),
                 "model": None if args.model is None else str(args.model), "max_steps": args.max_steps,
                 "dve": args.dve, "dve_blocks": args.dve_blocks, "dve_projections": args.dve_projections,
                 "dve_num_bases": args.num_bases, "seed": args.seed}
    with user_input():
        if not args.data.is_file():
            raise UserError(f"--data {str(args.data)!r}: " + ("is a directory, not a file" if args.data.is_dir()
                                                              else "no such file"))
        if args.config is not None:
            config = load_config(args.config, **overrides)
        else:
            config = TrainConfig.from_mapping({k: v for k, v in overrides.items() if v is not None}, "arguments")
        prepared = prepare(config, resume=args.resume, progress=_progress())
    result = train(prepared)
    if result.main_process:  # one line per run, also under accelerate launch
        extras = [f"resume from {_shown(str(result.checkpoint))}"] if result.checkpoint else []
        extras += [f"curves in {_shown(str(result.curves))}"] if result.curves else []
        print(f"{args.stage}: {'interrupted' if result.interrupted else 'trained'} to step {result.global_step}; "
              f"model in {_shown(str(result.out))}" + (f" ({'; '.join(extras)})" if extras else ""))
    # under a launcher only rank 0 reports the interruption: a worker's non-zero status makes the launcher stop
    # the others at once, and rank 0 may still be writing the final model
    return 130 if result.interrupted and result.main_process else 0


COMMANDS["train"] = _train


def _demo(args: argparse.Namespace) -> int:
    from skinflow.experiments.pipeline import load_pipeline_config, run_pipeline

    with user_input():
        config = load_pipeline_config(args.config, seed=args.seed)
        run_pipeline(config, args.out, arm=args.arm)
    return 0


def _ablate(args: argparse.Namespace) -> int:
    from skinflow.experiments.pipeline import load_pipeline_config, run_ablation

    with user_input():
        config = load_pipeline_config(args.config)
        run_ablation(config, args.out, args.seeds, arms=args.arms, jobs=args.jobs)
    return 0


COMMANDS["demo"] = _demo
COMMANDS["ablate"] = _ablate


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``skinflow`` console script; returns the exit status.

    Bad input raises ``SystemExit(2)`` after one line on stderr (``skinflow <command>: error: ...``). Nothing is
    downloaded: ``HF_HUB_OFFLINE=1`` is set (unless set otherwise) before any command imports transformers."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except UserError as error:
        if os.environ.get("SKINFLOW_TRACEBACK"):
            raise
        parser.exit(EXIT_USER_ERROR, f"skinflow {args.command}: error: {one_line(str(error))}\n")

