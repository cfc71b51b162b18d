"""`skinflow synthetic` and `skinflow export`: the data commands end to end."""

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from skinflow.cli import commands as cli
from skinflow.data.export import validate_verl_parquet
from skinflow.data.records import load_jsonl
from skinflow.data.synthetic import lesion_mask


def test_synthetic_then_export_to_verl_and_trl(tmp_path, capsys):
    out = tmp_path / "synthetic"
    assert cli.main(["synthetic", "24", "--out", str(out), "--seed", "2"]) == 0
    records = load_jsonl(out / "synthetic.jsonl")
    assert len(records) == 24 and (out / "contact_sheet.png").is_file()
    assert all((out / "images").is_dir() and r["source"] == "synthetic" for r in records)
    for record in records[:3]:  # the command writes every record's lesion mask, the mask of its image
        mask = np.asarray(Image.open(Path(record["image_path"]).parent / record["lesion_mask_path"])) > 0
        assert np.array_equal(mask, lesion_mask(record))

    parquet = tmp_path / "train.parquet"
    assert cli.main(["export", str(out / "synthetic.jsonl"), str(parquet), "--stage", "diagnosis",
                     "--split", "train", "--k", "3"]) == 0
    train = [r for r in records if r["split"] == "train"]
    assert validate_verl_parquet(parquet, progress=False) == len(train)
    rows = pq.read_table(parquet).to_pylist()
    truth = json.loads(rows[0]["reward_model"]["ground_truth"])
    assert truth["label"] == train[0]["label"] and truth["k"] == 3

    assert cli.main(["export", str(out / "synthetic.jsonl"), str(tmp_path / "trl"), "--stage", "caption",
                     "--format", "trl"]) == 0
    assert (tmp_path / "trl").is_dir()
    assert "wrote 24 caption rows" in capsys.readouterr().out


def test_data_command_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["synthetic", "-2", "--out", str(tmp_path)])
    assert exit_info.value.code == 2 and "argument n: must be a non-negative integer" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["export", str(tmp_path / "none.jsonl"), str(tmp_path / "x.parquet"), "--stage", "caption"])
    assert "none.jsonl': no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a"}\n')
    with pytest.raises(SystemExit):
        cli.main(["export", str(bad), str(tmp_path / "x.parquet"), "--stage", "caption"])
    assert "bad.jsonl:1" in capsys.readouterr().err
