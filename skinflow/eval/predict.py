"""Run a model over a JSONL data set and write the predictions file (docs/design.md §3b, docs/evaluation.md).

Each record's image gets the two prompts of ``model.inference.diagnose`` (the Stage I caption and the Stage II top-K
list, greedy), and one row is written per record::

    {"id", "label", "skin_type", "split", "caption_text", "diagnosis_text",
     "caption_target": {field: value} (the fields the record knows, ``targets.caption_target_of``),
     "candidates": [{"rank", "text", "label"}] (the scoring core's reading, ``rewards.candidate_labels``),
     "k", "model"}

Resumable: rows are appended, batch by batch (flushed and synced), to ``<out>.partial``; at the end the finished
rows (those of an existing ``<out>`` and of the ``.partial`` file, in data-set order) are written to ``<out>``
atomically and the ``.partial`` file is removed. A run that stops keeps every finished batch; the next run skips the
ids already done (a row cut short by a crash is dropped and redone).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from skinflow.formats import DEFAULT_K
from skinflow.model.inference import ImageReadError, check_image, diagnose, read_image
from skinflow.rewards import candidate_labels
from skinflow.targets import caption_target_of
from skinflow.util import atomic_write, check_int
from skinflow.util import progress as progress_bar

__all__ = ["check_record_images", "finished_rows", "partial_path", "predict", "prediction_row"]


def check_record_images(records: Sequence[Mapping[str, Any]], image_processor: Any) -> None:
    """Raise ``ImageReadError`` naming the first record whose image ``image_processor`` would refuse (an aspect
    ratio over 200, a side shorter than a patch), before any model runs. Reads only the image headers: the data
    layer has already decoded every image (``load_jsonl``)."""
    from PIL import Image

    for record in records:
        name = f"record {record['id']!r} (image {str(record['image_path'])!r})"
        try:
            with Image.open(record["image_path"]) as image:
                check_image(image, image_processor, name)
        except ImageReadError:
            raise
        except Exception as error:  # the file changed since it was checked
            raise ImageReadError(f"{name}: cannot read image: {error}") from error


def partial_path(out: str | os.PathLike[str]) -> Path:
    """The file that holds the finished batches of an unfinished run writing ``out``."""
    out = Path(out)
    return out.with_name(out.name + ".partial")


def _read_rows(path: Path) -> list[dict[str, Any]]:
    """The complete JSON-object rows with a string id of a (possibly cut short) predictions file."""
    rows = []
    if not path.is_file():
        return rows
    for raw in path.read_bytes().split(b"\n"):
        try:
            row = json.loads(raw.decode("utf-8"))
        except (ValueError, RecursionError):
            continue  # a blank line or the last line of an interrupted append
        if isinstance(row, dict) and isinstance(row.get("id"), str):
            rows.append(row)
    return rows


def finished_rows(out: str | os.PathLike[str], records: Sequence[Mapping[str, Any]], k: int,
                  model_name: str) -> dict[str, dict[str, Any]]:
    """id -> row of the rows already written for ``records`` (same label, k and model), in ``out`` or its partial
    file; rows of other ids, other settings or another model are not kept."""
    wanted = {record["id"]: record for record in records}
    done: dict[str, dict[str, Any]] = {}
    for row in [*_read_rows(Path(out)), *_read_rows(partial_path(out))]:
        record = wanted.get(row["id"])
        if record is None or row.get("label") != record["label"] or row.get("k") != k \
                or row.get("model") != model_name:
            continue
        done[row["id"]] = row
    return done


def prediction_row(record: Mapping[str, Any], caption_text: str, diagnosis_text: str, k: int,
                   model_name: str) -> dict[str, Any]:
    """The predictions-file row of one record and the model's two answers."""
    return {
        "id": record["id"],
        "label": record["label"],
        "skin_type": record.get("skin_type"),
        "split": record["split"],
        "caption_text": caption_text,
        "diagnosis_text": diagnosis_text,
        "caption_target": caption_target_of(record).to_json()["caption"],
        "candidates": [{"rank": rank, "text": text, "label": label}
                       for rank, (text, label) in enumerate(candidate_labels(diagnosis_text, k), start=1)],
        "k": k,
        "model": model_name,
    }


def _line(row: Mapping[str, Any]) -> str:
    return json.dumps(row, ensure_ascii=False) + "\n"


def predict(model, processor, records: Sequence[Mapping[str, Any]], out: str | os.PathLike[str], *,
            k: int = DEFAULT_K, batch_size: int = 8, max_new_tokens: int = 160, model_name: str = "model",
            progress: bool = False) -> Path:
    """Write the predictions file ``out`` for ``records`` (from ``data.records.load_jsonl``); returns its path.

    Args:
        model, processor: as ``model.inference.diagnose`` takes them.
        records: the data set's records (each with ``id``, ``image_path``, ``label``, ``split``, ``caption``).
        out: the predictions JSONL file; its directory must exist.
        k: candidates asked for; batch_size: images per generation (and per saved batch); max_new_tokens: the
            generation budget per answer; model_name: recorded in each row (and what a resumed run must match).
        progress: a progress bar on stderr.

    Raises ``ValueError`` for a bad argument and ``model.inference.ImageReadError`` naming the record whose image
    cannot be read; batches finished before stay in the partial file.
    """
    k = check_int("k", k, minimum=1)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    max_new_tokens = check_int("max_new_tokens", max_new_tokens, minimum=1)
    out = Path(out)
    done = finished_rows(out, records, k, model_name)
    partial = partial_path(out)
    # the partial file restarts from the rows kept, so that stale or cut-short lines never accumulate (and a run
    # that has finished nothing leaves no partial file)
    if done:
        atomic_write(partial, lambda file: file.writelines(_line(row) for row in done.values()))
    else:
        partial.unlink(missing_ok=True)
    todo = [record for record in records if record["id"] not in done]
    image_processor = getattr(processor, "image_processor", None)
    batches = [todo[start:start + batch_size] for start in range(0, len(todo), batch_size)]
    for batch in progress_bar(batches, "predicting", total=len(batches), enabled=progress):
        images = [read_image(record["image_path"], f"record {record['id']!r}", image_processor) for record in batch]
        answers = diagnose(model, processor, images, k=k, batch_size=batch_size, max_new_tokens=max_new_tokens)
        rows = [prediction_row(record, answer.caption_text, answer.diagnosis_text, k, model_name)
                for record, answer in zip(batch, answers)]
        with partial.open("a", encoding="utf-8", newline="\n") as file:
            file.writelines(_line(row) for row in rows)
            file.flush()
            os.fsync(file.fileno())
        done.update((row["id"], row) for row in rows)
    rows = [done[record["id"]] for record in records]
    atomic_write(out, lambda file: file.writelines(_line(row) for row in rows))
    partial.unlink(missing_ok=True)
    return out
