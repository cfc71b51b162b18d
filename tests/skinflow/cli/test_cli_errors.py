"""Every ``skinflow`` command against a table of bad inputs: exit status 2, one stderr line naming the argument or
file, no traceback, nothing left behind (docs/design.md §5: one exit path for user errors).

The cases that must fail before any model loads run with the model loaders replaced by a tripwire; the corrupt
checkpoints are copies of one tiny checkpoint built per module. Nothing may touch the network.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

import skinflow.model.dve
import skinflow.model.tiny
from skinflow.cli import commands as cli
from skinflow.data.records import save_jsonl
from skinflow.data.synthetic import generate
from tests import REPO


def png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG that declares ``width`` × ``height`` pixels (a decompression bomb for PIL) but holds almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
                     + chunk(b"IEND", b""))


def _images(root: Path) -> dict[str, Path]:
    paths = {}
    for name, size in {"ok": (40, 40), "wide": (402, 2), "tall": (1, 300)}.items():
        paths[name] = root / f"{name}.png"
        Image.new("RGB", size, "brown").save(paths[name])
    paths["text"] = root / "text.jpg"
    paths["text"].write_text("this is not a JPEG")
    paths["empty"] = root / "empty.png"
    paths["empty"].write_bytes(b"")
    data = paths["ok"].read_bytes()
    paths["truncated"] = root / "truncated.png"
    paths["truncated"].write_bytes(data[: len(data) // 2])
    paths["folder"] = root / "folder.png"
    paths["folder"].mkdir()
    paths["pipe"] = root / "pipe.png"
    os.mkfifo(paths["pipe"])
    paths["bomb"] = root / "bomb.png"  # over 2 × MAX_IMAGE_PIXELS: PIL raises DecompressionBombError
    png_header_only(paths["bomb"], 30_000, 30_000)
    paths["bomb_warning"] = root / "bomb_warning.png"  # between 1× and 2×: PIL only warns
    png_header_only(paths["bomb_warning"], 10_000, 10_000)
    return paths


def _edit_config(directory: Path, edit) -> None:
    config = json.loads((directory / "config.json").read_text())
    edit(config)
    (directory / "config.json").write_text(json.dumps(config))


def _checkpoints(root: Path) -> dict[str, Path]:
    """A saved tiny checkpoint ``ck`` and broken copies of it, one defect each."""
    good = root / "ck"
    model, processor = skinflow.model.tiny.build(seed=0)
    model.save_pretrained(good)
    processor.save_pretrained(good)
    weights = good / "model.safetensors"
    state = load_file(weights)

    def copy(name: str) -> Path:
        shutil.copytree(good, root / name)
        return root / name

    paths = {"ck": good}
    paths["ck_garbage"] = copy("ck_garbage")
    (paths["ck_garbage"] / "model.safetensors").write_bytes(os.urandom(4096))
    paths["ck_truncated"] = copy("ck_truncated")
    (paths["ck_truncated"] / "model.safetensors").write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    paths["ck_empty_weights"] = copy("ck_empty_weights")
    (paths["ck_empty_weights"] / "model.safetensors").write_bytes(b"")
    paths["ck_no_weights"] = copy("ck_no_weights")
    (paths["ck_no_weights"] / "model.safetensors").unlink()
    paths["ck_pickle_only"] = copy("ck_pickle_only")
    (paths["ck_pickle_only"] / "model.safetensors").rename(paths["ck_pickle_only"] / "pytorch_model.bin")
    paths["ck_bad_index"] = copy("ck_bad_index")
    (paths["ck_bad_index"] / "model.safetensors").unlink()
    (paths["ck_bad_index"] / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"lm_head.weight": "model-00001-of-00002.safetensors"}}))
    paths["ck_no_tensors"] = copy("ck_no_tensors")
    save_file({}, paths["ck_no_tensors"] / "model.safetensors")
    paths["ck_wrong_shape"] = copy("ck_wrong_shape")
    save_file({**state, "model.visual.blocks.0.mlp.up_proj.weight": torch.zeros(3, 3)},
              paths["ck_wrong_shape"] / "model.safetensors", metadata={"format": "pt"})
    paths["ck_no_config"] = copy("ck_no_config")
    (paths["ck_no_config"] / "config.json").unlink()
    paths["ck_bad_json"] = copy("ck_bad_json")
    (paths["ck_bad_json"] / "config.json").write_text('{"model_type": ')
    paths["ck_config_not_utf8"] = copy("ck_config_not_utf8")
    (paths["ck_config_not_utf8"] / "config.json").write_bytes(b'{"model_type": "\xff"}')
    paths["ck_config_list"] = copy("ck_config_list")
    (paths["ck_config_list"] / "config.json").write_text("[1, 2]")
    paths["ck_llama"] = copy("ck_llama")
    _edit_config(paths["ck_llama"], lambda c: c.update(model_type="llama"))
    paths["ck_no_model_type"] = copy("ck_no_model_type")
    _edit_config(paths["ck_no_model_type"], lambda c: c.pop("model_type"))
    paths["ck_bad_dve"] = copy("ck_bad_dve")
    _edit_config(paths["ck_bad_dve"], lambda c: c["vision_config"]["dve"].update(blocks=[9]))
    paths["ck_small_vocab"] = copy("ck_small_vocab")
    _edit_config(paths["ck_small_vocab"], lambda c: c["text_config"].update(vocab_size=100))
    paths["ck_other_patch"] = copy("ck_other_patch")
    _edit_config(paths["ck_other_patch"], lambda c: c["vision_config"].update(patch_size=14))
    paths["ck_no_tokenizer"] = copy("ck_no_tokenizer")
    (paths["ck_no_tokenizer"] / "tokenizer.json").unlink()
    paths["ck_bad_tokenizer"] = copy("ck_bad_tokenizer")
    (paths["ck_bad_tokenizer"] / "tokenizer.json").write_text("{not json")
    paths["ck_no_processor"] = copy("ck_no_processor")
    (paths["ck_no_processor"] / "processor_config.json").unlink()
    paths["ck_no_chat_template"] = copy("ck_no_chat_template")
    (paths["ck_no_chat_template"] / "chat_template.jinja").unlink()
    paths["ck_file"] = root / "ck_file"
    paths["ck_file"].write_text("a file, not a directory")
    paths["ck_empty_dir"] = root / "ck_empty_dir"
    paths["ck_empty_dir"].mkdir()
    return paths


def _data(root: Path) -> dict[str, Path]:
    """A small JSONL data set and bad variants of it."""
    data = root / "data"
    data.mkdir()
    records = generate(6, seed=0, progress=False)
    good = save_jsonl(records, data / "set.jsonl", image_dir=data / "images", progress=False)
    lines = good.read_text(encoding="utf-8").splitlines()
    paths = {"jsonl": good}
    paths["jsonl_not_utf8"] = data / "not_utf8.jsonl"
    paths["jsonl_not_utf8"].write_bytes(lines[0].encode() + b"\n" + b'{"id": "\xff\xfe"}\n')
    paths["jsonl_bad_json"] = data / "bad_json.jsonl"
    paths["jsonl_bad_json"].write_text(lines[0] + "\n{not json\n", encoding="utf-8")
    paths["jsonl_folder"] = data / "folder.jsonl"
    paths["jsonl_folder"].mkdir()
    paths["jsonl_bom"] = data / "bom.jsonl"
    paths["jsonl_bom"].write_bytes(b"\xef\xbb\xbf" + good.read_bytes())
    # a record whose image file is text named .png, and one whose PNG is cut in half: neither decodes
    first = json.loads(lines[0])
    (data / "images" / "text.png").write_text("not a PNG")
    paths["jsonl_text_image"] = data / "text_image.jsonl"
    paths["jsonl_text_image"].write_text(json.dumps({**first, "image_path": "images/text.png"}) + "\n")
    png = (data / first["image_path"]).read_bytes()
    (data / "images" / "cut.png").write_bytes(png[: len(png) // 2])
    paths["jsonl_cut_image"] = data / "cut_image.jsonl"
    paths["jsonl_cut_image"].write_text(json.dumps({**first, "image_path": "images/cut.png"}) + "\n")
    Image.new("RGB", (402, 2), "brown").save(data / "images" / "wide.png")  # decodes; the processor refuses it
    paths["jsonl_wide_image"] = data / "wide_image.jsonl"
    paths["jsonl_wide_image"].write_text(json.dumps({**first, "image_path": "images/wide.png"}) + "\n")
    paths["a_file"] = root / "a_file"
    paths["a_file"].write_text("x")
    paths["nonempty"] = root / "nonempty"
    paths["nonempty"].mkdir()
    (paths["nonempty"] / "keep.txt").write_text("x")
    return paths


def _predictions(root: Path) -> dict[str, Path]:
    """A predictions file (docs/design.md §3b) and bad variants of it."""
    folder = root / "predictions"
    folder.mkdir()
    good = {"id": "a", "label": "psoriasis", "skin_type": 2, "split": "test", "diagnosis_text": "1. psoriasis",
            "caption_text": None, "caption_target": None}
    variants = {
        "predictions": [good],
        "predictions_bad_label": [good, {**good, "id": "b", "label": "banana"}],
        "predictions_bad_skin_type": [{**good, "skin_type": "V"}],
        "predictions_missing_key": [{key: value for key, value in good.items() if key != "diagnosis_text"}],
        "predictions_duplicate_id": [good, good],
        "predictions_empty": [],
    }
    paths = {}
    for name, rows in variants.items():
        paths[name] = folder / f"{name}.jsonl"
        paths[name].write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    paths["predictions_bad_json"] = folder / "predictions_bad_json.jsonl"
    paths["predictions_bad_json"].write_text("{not json\n", encoding="utf-8")
    return paths


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("bad_inputs")
    paths = {**_images(root), **_checkpoints(root), **_data(root), **_predictions(root)}
    paths["missing"] = root / "missing.png"
    return {name: str(path) for name, path in paths.items()}


# (case id, argv with {placeholders}, a text the one line must contain, whether the case gets as far as loading
# weights). {out} is a fresh, empty directory per case (it must stay empty); every other name is from `files`.
CASES = [
    # no command / unknown command / unknown option
    ("no-command", [], "command", False),
    ("unknown-command", ["frobnicate"], "frobnicate", False),
    # diagnose: images
    ("diagnose-no-image", ["diagnose"], "IMAGE", False),
    ("diagnose-missing", ["diagnose", "{missing}"], "missing.png'", False),
    ("diagnose-folder", ["diagnose", "{folder}"], "folder.png': is a directory", False),
    ("diagnose-fifo", ["diagnose", "{pipe}"], "pipe.png': is not a regular file", False),
    ("diagnose-text", ["diagnose", "{ok}", "{text}"], "text.jpg': not an image", False),
    ("diagnose-empty-file", ["diagnose", "{empty}"], "empty.png'", False),
    ("diagnose-truncated", ["diagnose", "{truncated}"], "truncated.png': cannot read image", False),
    ("diagnose-bomb", ["diagnose", "{bomb}"], "bomb.png': image too large", False),
    ("diagnose-bomb-warning", ["diagnose", "{bomb_warning}"], "bomb_warning.png': image too large", False),
    ("diagnose-aspect-wide", ["diagnose", "{ok}", "{wide}"], "wide.png': the image processor refuses", False),
    ("diagnose-aspect-tall", ["diagnose", "{tall}"], "tall.png': the image processor refuses", False),
    ("diagnose-aspect-before-checkpoint-load", ["diagnose", "{wide}", "--model", "{ck}"], "wide.png'", False),
    # diagnose: options
    ("diagnose-k-0", ["diagnose", "{ok}", "--k", "0"], "--k", False),
    ("diagnose-k-negative", ["diagnose", "{ok}", "--k", "-1"], "--k", False),
    ("diagnose-k-text", ["diagnose", "{ok}", "--k", "six"], "--k", False),
    ("diagnose-batch-size-0", ["diagnose", "{ok}", "--batch-size", "0"], "--batch-size", False),
    ("diagnose-seed-negative", ["diagnose", "{ok}", "--seed", "-1"], "--seed", False),
    ("diagnose-seed-huge", ["diagnose", "{ok}", "--seed", str(2**70)], "--seed", False),
    ("diagnose-unknown-option", ["diagnose", "{ok}", "--temperature", "2"], "--temperature", False),
    # diagnose: --model
    ("model-missing", ["diagnose", "{ok}", "--model", "{missing}"], "--model", False),
    ("model-file", ["diagnose", "{ok}", "--model", "{ck_file}"], "ck_file'", False),
    ("model-empty-dir", ["diagnose", "{ok}", "--model", "{ck_empty_dir}"], "ck_empty_dir': no config.json", False),
    ("model-garbage-weights", ["diagnose", "{ok}", "--model", "{ck_garbage}"], "model.safetensors is not a valid", False),
    ("model-truncated-weights", ["diagnose", "{ok}", "--model", "{ck_truncated}"], "model.safetensors is not a", False),
    ("model-empty-weights", ["diagnose", "{ok}", "--model", "{ck_empty_weights}"], "model.safetensors is not a", False),
    ("model-no-weights", ["diagnose", "{ok}", "--model", "{ck_no_weights}"], "ck_no_weights': no weights", False),
    ("model-pickle-only", ["diagnose", "{ok}", "--model", "{ck_pickle_only}"], "pytorch_model.bin", False),
    ("model-bad-index", ["diagnose", "{ok}", "--model", "{ck_bad_index}"], "model-00001-of-00002", False),
    ("model-no-tensors", ["diagnose", "{ok}", "--model", "{ck_no_tensors}"], "ck_no_tensors': the weights lack", True),
    ("model-wrong-shape", ["diagnose", "{ok}", "--model", "{ck_wrong_shape}"], "up_proj.weight: [3, 3]", True),
    ("model-no-config", ["diagnose", "{ok}", "--model", "{ck_no_config}"], "ck_no_config': no config.json", False),
    ("model-bad-json", ["diagnose", "{ok}", "--model", "{ck_bad_json}"], "config.json is not valid JSON", False),
    ("model-config-not-utf8", ["diagnose", "{ok}", "--model", "{ck_config_not_utf8}"], "config.json is not UTF-8",
     False),
    ("model-config-list", ["diagnose", "{ok}", "--model", "{ck_config_list}"], "config.json must hold", False),
    ("model-wrong-type", ["diagnose", "{ok}", "--model", "{ck_llama}"], "model_type 'llama'", False),
    ("model-no-type", ["diagnose", "{ok}", "--model", "{ck_no_model_type}"], "model_type None", False),
    ("model-bad-dve", ["diagnose", "{ok}", "--model", "{ck_bad_dve}"], "config.vision_config.dve", False),
    ("model-small-vocab", ["diagnose", "{ok}", "--model", "{ck_small_vocab}"], "vocab_size 100", False),
    ("model-other-patch", ["diagnose", "{ok}", "--model", "{ck_other_patch}"], "patch_size 8 vs the model's 14",
     False),
    ("model-no-tokenizer", ["diagnose", "{ok}", "--model", "{ck_no_tokenizer}"], "no tokenizer files", False),
    ("model-bad-tokenizer", ["diagnose", "{ok}", "--model", "{ck_bad_tokenizer}"], "cannot load the processor",
     False),
    ("model-no-processor", ["diagnose", "{ok}", "--model", "{ck_no_processor}"], "no image processor settings",
     False),
    ("model-no-chat-template", ["diagnose", "{ok}", "--model", "{ck_no_chat_template}"], "no chat template", False),
    # synthetic
    ("synthetic-no-args", ["synthetic"], "n, --out", False),
    ("synthetic-n-negative", ["synthetic", "-1", "--out", "{out}/set"], "argument n", False),
    ("synthetic-n-text", ["synthetic", "many", "--out", "{out}/set"], "argument n", False),
    ("synthetic-n-float", ["synthetic", "2.5", "--out", "{out}/set"], "argument n", False),
    ("synthetic-no-out", ["synthetic", "3"], "--out", False),
    ("synthetic-out-is-a-file", ["synthetic", "3", "--out", "{a_file}"], "a_file': exists and is not a directory",
     False),
    ("synthetic-out-under-a-file", ["synthetic", "3", "--out", "{a_file}/set"], "a_file/set'", False),
    ("synthetic-noise-above-1", ["synthetic", "3", "--out", "{out}/set", "--label-noise", "1.5"], "--label-noise",
     False),
    ("synthetic-noise-nan", ["synthetic", "3", "--out", "{out}/set", "--label-noise", "nan"], "--label-noise", False),
    ("synthetic-noise-negative", ["synthetic", "3", "--out", "{out}/set", "--label-noise", "-0.1"], "--label-noise",
     False),
    ("synthetic-seed-negative", ["synthetic", "3", "--out", "{out}/set", "--seed", "-4"], "--seed", False),
    # export
    ("export-no-args", ["export"], "JSONL", False),
    ("export-no-stage", ["export", "{jsonl}", "{out}/x.parquet"], "--stage", False),
    ("export-bad-stage", ["export", "{jsonl}", "{out}/x.parquet", "--stage", "both"], "--stage", False),
    ("export-bad-format", ["export", "{jsonl}", "{out}/x", "--stage", "caption", "--format", "csv"], "--format",
     False),
    ("export-bad-split", ["export", "{jsonl}", "{out}/x.parquet", "--stage", "caption", "--split", "dev"], "--split",
     False),
    ("export-k-0", ["export", "{jsonl}", "{out}/x.parquet", "--stage", "diagnosis", "--k", "0"], "--k", False),
    ("export-k-negative", ["export", "{jsonl}", "{out}/x.parquet", "--stage", "diagnosis", "--k", "-1"], "--k", False),
    ("export-missing-jsonl", ["export", "{missing}", "{out}/x.parquet", "--stage", "caption"], "missing.png'", False),
    ("export-jsonl-folder", ["export", "{jsonl_folder}", "{out}/x.parquet", "--stage", "caption"], "folder.jsonl'",
     False),
    ("export-jsonl-not-utf8", ["export", "{jsonl_not_utf8}", "{out}/x.parquet", "--stage", "caption"],
     "not_utf8.jsonl", False),
    ("export-jsonl-bad-json", ["export", "{jsonl_bad_json}", "{out}/x.parquet", "--stage", "caption"],
     "bad_json.jsonl:2", False),
    ("export-text-image", ["export", "{jsonl_text_image}", "{out}/x.parquet", "--stage", "diagnosis"], "text.png",
     False),
    ("export-cut-image", ["export", "{jsonl_cut_image}", "{out}/x.parquet", "--stage", "diagnosis"], "cut.png", False),
    ("export-trl-text-image", ["export", "{jsonl_text_image}", "{out}/trl", "--stage", "diagnosis", "--format", "trl"],
     "text.png", False),
    ("export-out-missing-dir", ["export", "{jsonl}", "{out}/no/x.parquet", "--stage", "caption"], "no/x.parquet'",
     False),
    ("export-out-is-the-input", ["export", "{jsonl}", "{jsonl}", "--stage", "caption"], "is the input JSONL", False),
    ("export-verl-out-is-a-dir", ["export", "{jsonl}", "{nonempty}", "--stage", "caption"], "nonempty'", False),
    ("export-trl-out-nonempty", ["export", "{jsonl}", "{nonempty}", "--stage", "caption", "--format", "trl"],
     "nonempty'", False),
    ("export-trl-out-is-a-file", ["export", "{jsonl}", "{a_file}", "--stage", "caption", "--format", "trl"],
     "a_file'", False),
    ("export-trl-out-missing-dir", ["export", "{jsonl}", "{out}/no/trl", "--stage", "caption", "--format", "trl"],
     "no/trl'", False),
    # predict
    ("predict-no-args", ["predict"], "--data", False),
    ("predict-no-out", ["predict", "--data", "{jsonl}"], "--out", False),
    ("predict-missing-data", ["predict", "--data", "{missing}", "--out", "{out}/p.jsonl"], "missing.png'", False),
    ("predict-data-folder", ["predict", "--data", "{jsonl_folder}", "--out", "{out}/p.jsonl"],
     "folder.jsonl': is a directory", False),
    ("predict-data-bad-json", ["predict", "--data", "{jsonl_bad_json}", "--out", "{out}/p.jsonl"], "bad_json.jsonl:2",
     False),
    ("predict-data-not-utf8", ["predict", "--data", "{jsonl_not_utf8}", "--out", "{out}/p.jsonl"], "not_utf8.jsonl",
     False),
    ("predict-text-image", ["predict", "--data", "{jsonl_text_image}", "--out", "{out}/p.jsonl"], "text.png", False),
    ("predict-image-the-processor-refuses", ["predict", "--data", "{jsonl_wide_image}", "--out", "{out}/p.jsonl"],
     "wide.png'): the image processor refuses", False),
    ("predict-image-refused-before-checkpoint-load",
     ["predict", "--data", "{jsonl_wide_image}", "--out", "{out}/p.jsonl", "--model", "{ck}"], "wide.png'", False),
    ("predict-empty-split", ["predict", "--data", "{jsonl}", "--out", "{out}/p.jsonl", "--split", "val"],
     "no records in split 'val'", False),
    ("predict-bad-split", ["predict", "--data", "{jsonl}", "--out", "{out}/p.jsonl", "--split", "dev"], "--split",
     False),
    ("predict-k-0", ["predict", "--data", "{jsonl}", "--out", "{out}/p.jsonl", "--k", "0"], "--k", False),
    ("predict-batch-size-0", ["predict", "--data", "{jsonl}", "--out", "{out}/p.jsonl", "--batch-size", "0"],
     "--batch-size", False),
    ("predict-max-new-tokens-0", ["predict", "--data", "{jsonl}", "--out", "{out}/p.jsonl", "--max-new-tokens", "0"],
     "--max-new-tokens", False),
    ("predict-out-missing-dir", ["predict", "--data", "{jsonl}", "--out", "{out}/no/p.jsonl"], "no/p.jsonl'", False),
    ("predict-out-is-a-dir", ["predict", "--data", "{jsonl}", "--out", "{nonempty}"], "nonempty': is a directory",
     False),
    ("predict-out-is-the-input", ["predict", "--data", "{jsonl}", "--out", "{jsonl}"], "is the input JSONL", False),
    ("predict-model-missing", ["predict", "--data", "{jsonl}", "--out", "{out}/p.jsonl", "--model", "{missing}"],
     "--model", False),
    ("predict-model-wrong-type", ["predict", "--data", "{jsonl}", "--out", "{out}/p.jsonl", "--model", "{ck_llama}"],
     "model_type 'llama'", False),
    # evaluate
    ("evaluate-no-args", ["evaluate"], "--out", False),
    ("evaluate-nothing-to-score", ["evaluate", "--out", "{out}/r"], "give PREDICTIONS or --data", False),
    ("evaluate-both", ["evaluate", "{predictions}", "--data", "{jsonl}", "--out", "{out}/r"], "not both", False),
    ("evaluate-model-without-data", ["evaluate", "{predictions}", "--model", "{ck}", "--out", "{out}/r"],
     "--model needs --data", False),
    ("evaluate-missing", ["evaluate", "{missing}", "--out", "{out}/r"], "missing.png' does not exist", False),
    ("evaluate-folder", ["evaluate", "{nonempty}", "--out", "{out}/r"], "nonempty' is a directory", False),
    ("evaluate-bad-label", ["evaluate", "{predictions_bad_label}", "--out", "{out}/r"],
     "predictions_bad_label.jsonl:2: 'label' 'banana'", False),
    ("evaluate-bad-skin-type", ["evaluate", "{predictions_bad_skin_type}", "--out", "{out}/r"],
     "predictions_bad_skin_type.jsonl:1: 'skin_type'", False),
    ("evaluate-missing-key", ["evaluate", "{predictions_missing_key}", "--out", "{out}/r"],
     "missing key 'diagnosis_text'", False),
    ("evaluate-duplicate-id", ["evaluate", "{predictions_duplicate_id}", "--out", "{out}/r"], "duplicate id 'a'",
     False),
    ("evaluate-empty", ["evaluate", "{predictions_empty}", "--out", "{out}/r"], "no predictions", False),
    ("evaluate-bad-json", ["evaluate", "{predictions_bad_json}", "--out", "{out}/r"],
     "predictions_bad_json.jsonl:1: not valid JSON", False),
    ("evaluate-out-is-a-file", ["evaluate", "{predictions}", "--out", "{a_file}"], "a_file': exists", False),
    ("evaluate-out-missing-dir", ["evaluate", "{predictions}", "--out", "{out}/no/r"], "no/r'", False),
    ("evaluate-bootstrap-negative", ["evaluate", "{predictions}", "--out", "{out}/r", "--bootstrap", "-1"],
     "--bootstrap", False),
    ("evaluate-seed-negative", ["evaluate", "{predictions}", "--out", "{out}/r", "--seed", "-1"], "--seed", False),
    ("evaluate-empty-split", ["evaluate", "{predictions}", "--out", "{out}/r", "--split", "val"],
     "no rows in split 'val'", False),
    ("evaluate-k-0", ["evaluate", "{predictions}", "--out", "{out}/r", "--k", "0"], "--k", False),
    ("evaluate-data-bad-json", ["evaluate", "--data", "{jsonl_bad_json}", "--out", "{out}/r"], "bad_json.jsonl:2",
     False),
    ("evaluate-data-image-the-processor-refuses", ["evaluate", "--data", "{jsonl_wide_image}", "--out", "{out}/r"],
     "the image processor refuses", False),
    ("evaluate-data-missing", ["evaluate", "--data", "{missing}", "--out", "{out}/r"], "missing.png'", False),
    ("evaluate-data-model-wrong-type", ["evaluate", "--data", "{jsonl}", "--model", "{ck_llama}", "--out", "{out}/r"],
     "model_type 'llama'", False),
    # attention
    ("attention-no-args", ["attention"], "--data", False),
    ("attention-no-out", ["attention", "--data", "{jsonl}"], "--out", False),
    ("attention-missing-data", ["attention", "--data", "{missing}", "--out", "{out}/a"], "missing.png'", False),
    ("attention-data-bad-json", ["attention", "--data", "{jsonl_bad_json}", "--out", "{out}/a"], "bad_json.jsonl:2",
     False),
    ("attention-out-is-a-file", ["attention", "--data", "{jsonl}", "--out", "{a_file}"], "a_file': exists", False),
    ("attention-out-missing-dir", ["attention", "--data", "{jsonl}", "--out", "{out}/no/a"], "no/a'", False),
    ("attention-bad-stage", ["attention", "--data", "{jsonl}", "--out", "{out}/a", "--stage", "both"], "--stage",
     False),
    ("attention-image-the-processor-refuses", ["attention", "--data", "{jsonl_wide_image}", "--out", "{out}/a"],
     "the image processor refuses", False),
    ("attention-limit-0", ["attention", "--data", "{jsonl}", "--out", "{out}/a", "--limit", "0"], "--limit", False),
    ("attention-model-wrong-type", ["attention", "--data", "{jsonl}", "--out", "{out}/a", "--model", "{ck_llama}"],
     "model_type 'llama'", False),
    # train
    ("demo-no-out", ["demo"], "--out", False),
    ("demo-missing-config", ["demo", "--config", "{missing}", "--out", "{out}/d"], "missing.png': no such file", False),
    ("demo-bad-arm", ["demo", "--arm", "best", "--out", "{out}/d"], "--arm", False),
    ("ablate-no-out", ["ablate"], "--out", False),
    ("ablate-bad-seeds", ["ablate", "--seeds", "0,x", "--out", "{out}/a"], "--seeds", False),
    ("ablate-missing-config", ["ablate", "--config", "{missing}", "--out", "{out}/a"], "missing.png': no such file",
     False),
    ("train-no-args", ["train"], "stage", False),
    ("train-bad-stage", ["train", "rl", "--data", "{jsonl}", "--out", "{out}/t"], "stage", False),
    ("train-no-out", ["train", "sft", "--data", "{jsonl}"], "--out", False),
    ("train-missing-data", ["train", "sft", "--data", "{missing}", "--out", "{out}/t"], "missing.png'", False),
    ("train-data-bad-json", ["train", "sft", "--data", "{jsonl_bad_json}", "--out", "{out}/t"], "bad_json.jsonl:2",
     False),
    ("train-data-image-does-not-decode", ["train", "caption", "--data", "{jsonl_text_image}", "--out", "{out}/t"],
     "text.png", False),
    ("train-max-steps-0", ["train", "sft", "--data", "{jsonl}", "--out", "{out}/t", "--max-steps", "0"],
     "--max-steps", False),
    ("train-missing-config", ["train", "sft", "--data", "{jsonl}", "--out", "{out}/t", "--config", "{missing}"],
     "missing.png'", False),
    ("train-model-wrong-type", ["train", "sft", "--data", "{jsonl}", "--out", "{out}/t", "--model", "{ck_llama}"],
     "model_type 'llama'", False),
    ("train-resume-nothing", ["train", "sft", "--data", "{jsonl}", "--out", "{out}/t", "--resume"],
     "holds no checkpoint", False),
]


def tripwire(*args, **kwargs):
    raise AssertionError("a model was loaded for input that must be refused before any model loads")


def no_network(*args, **kwargs):
    raise AssertionError("the CLI tried to reach the network")  # not an OSError: the CLI must not swallow it


@pytest.fixture
def guarded(monkeypatch):
    """No network; HF_HUB_OFFLINE restored after the test (the CLI sets it)."""
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("SKINFLOW_TRACEBACK", raising=False)
    return monkeypatch


def the_one_line(code: object, out: str, err: str) -> str:
    """Assert the user-error contract and return the line."""
    assert "Traceback" not in err and "Traceback" not in out, err
    assert code == 2, (code, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one stderr line, got {len(lines)}:\n{err}"
    assert lines[0].startswith("skinflow") and ": error: " in lines[0], lines[0]
    assert out == "", out
    return lines[0]


@pytest.mark.parametrize("argv, names, loads", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input_gets_one_line_and_status_2(argv, names, loads, files, tmp_path, capsys, guarded):
    out = tmp_path / "out"
    out.mkdir()
    if not loads:
        guarded.setattr(skinflow.model.tiny, "build", tripwire)
        guarded.setattr(skinflow.model.dve, "load_pretrained", tripwire)
    arguments = [part.format(out=out, **files) for part in argv]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(arguments)
    captured = capsys.readouterr()
    line = the_one_line(exit_info.value.code, captured.out, captured.err)
    assert names.format(out=out, **files) in line
    assert list(out.iterdir()) == [], "a failed command left files behind"


def test_the_table_covers_every_command():
    commands = {case[1][0] for case in CASES if case[1]}
    assert set(cli.COMMANDS) <= commands


def test_the_intact_checkpoint_and_data_pass_the_same_checks(files, tmp_path, capsys, guarded):
    """The broken copies fail because of their one defect: the original passes every check."""
    from skinflow.model.processor import load_processor

    config = skinflow.model.dve.check_checkpoint(files["ck"], name="--model")
    load_processor(files["ck"], config=config, name="--model")
    assert skinflow.model.dve.load_pretrained(files["ck"]) is not None
    assert cli.main(["export", files["jsonl"], str(tmp_path / "x.parquet"), "--stage", "diagnosis"]) == 0
    assert cli.main(["export", files["jsonl"], str(tmp_path / "trl"), "--stage", "caption", "--format", "trl"]) == 0
    (tmp_path / "empty").mkdir()  # an empty directory is a fine TRL target
    assert cli.main(["export", files["jsonl"], str(tmp_path / "empty"), "--stage", "caption", "--format", "trl"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "trl", "x.parquet"]
    assert "wrote 6 caption rows" in capsys.readouterr().out


def test_a_jsonl_with_a_utf8_bom_is_read(files, tmp_path, capsys, guarded):
    """A byte-order mark is valid UTF-8 text (editors on Windows write one): it is not an error."""
    assert cli.main(["export", files["jsonl_bom"], str(tmp_path / "x.parquet"), "--stage", "diagnosis"]) == 0
    assert "wrote 6 diagnosis rows" in capsys.readouterr().out


def test_user_errors_keep_their_traceback_on_request(files, guarded):
    guarded.setenv("SKINFLOW_TRACEBACK", "1")
    with pytest.raises(cli.UserError, match="bomb.png"):
        cli.main(["diagnose", files["bomb"]])


@pytest.mark.parametrize(
    "argv, names",
    [
        (["diagnose", "{bomb}"], "bomb.png'"),
        (["diagnose", "{ok}", "--model", "{ck_no_tensors}"], "ck_no_tensors'"),  # loads: transformers stays quiet
        (["synthetic", "3", "--out", "{a_file}"], "a_file'"),
    ],
    ids=["bomb", "checkpoint-without-tensors", "synthetic-out-file"],
)
def test_a_real_process_prints_no_traceback(argv, names, files):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "default"}
    env.pop("SKINFLOW_TRACEBACK", None)
    result = subprocess.run([sys.executable, "-m", "skinflow.cli", *[a.format(**files) for a in argv]],
                            capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    line = the_one_line(result.returncode, result.stdout, result.stderr)
    assert names.format(**files) in line


def test_one_line_joins_and_bounds_multi_line_messages():
    assert cli.one_line("3 bad lines in x.jsonl:\nx.jsonl:1: a\n\nx.jsonl:2: b") == \
        "3 bad lines in x.jsonl: x.jsonl:1: a; x.jsonl:2: b"
    many = cli.one_line("title:\n" + "\n".join(f"line {i}" for i in range(50)))
    assert "\n" not in many and many.endswith("line 2; ... and 47 more")
    assert len(cli.one_line("x" * 10_000)) <= 2000


def test_bugs_keep_their_traceback(files, guarded):
    """Only input-dependent steps report one line: an exception in the model run is a bug and propagates."""
    from skinflow.model import inference

    def broken(*args, **kwargs):
        raise ValueError("a bug inside generation")

    guarded.setattr(inference, "generate_answers", broken)
    with pytest.raises(ValueError, match="a bug inside generation"):
        cli.main(["diagnose", files["ok"]])
