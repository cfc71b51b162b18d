"""Checkpoints that look complete are complete: a checkpoint-N whose save did not finish (no completion mark, a
truncated trainer_state.json) or that lost a file is passed over by --resume, with a note (save_total_limit, which
deletes old checkpoints only once the new one is complete: test_multiprocess)."""

from __future__ import annotations

import json

from skinflow.train import TrainConfig, run
from skinflow.train.checkpoints import COMPLETE_FILE, checkpoint_problem
from skinflow.train.runner import last_checkpoint
from tests.skinflow.train.conftest import FAST


def sft(data_file, out, steps, **changes):
    settings = FAST | {"batch_size": 2, "save_steps": 1, "tensorboard": False} | changes
    return TrainConfig(stage="sft", data=str(data_file), out=str(out), max_steps=steps, learning_rate=1e-2,
                       **settings)


def test_resume_passes_over_incomplete_checkpoints(data_file, tmp_path):
    out = tmp_path / "run"
    first = run(sft(data_file, out, 3), progress=False, quiet=True)
    assert first.checkpoint.name == "checkpoint-3"
    assert all(checkpoint_problem(out / f"checkpoint-{n}") is None for n in (1, 2, 3))
    # checkpoint-3: a crash while the trainer wrote trainer_state.json (no mark yet, the state cut short)
    state = out / "checkpoint-3" / "trainer_state.json"
    state.write_text(state.read_text()[:100])
    (out / "checkpoint-3" / COMPLETE_FILE).unlink()
    # checkpoint-2: marked complete, then its optimizer state went missing (the trainer would resume without it)
    (out / "checkpoint-2" / "optimizer.pt").unlink()
    assert "save did not finish" in checkpoint_problem(out / "checkpoint-3")
    assert checkpoint_problem(out / "checkpoint-2") == "optimizer.pt is missing"
    assert last_checkpoint(out).name == "checkpoint-1"

    resumed = run(sft(data_file, out, 3), resume=True, progress=False, quiet=True)
    assert resumed.global_step == 3 and resumed.checkpoint.name == "checkpoint-3"
    assert [note for note in resumed.notes if "is incomplete" in note] == [
        f"{out / 'checkpoint-3'} is incomplete (no {COMPLETE_FILE} (its save did not finish)); resuming from "
        "checkpoint-1",
        f"{out / 'checkpoint-2'} is incomplete (optimizer.pt is missing); resuming from checkpoint-1"]
    history = json.loads((out / "run.json").read_text())["history"]
    assert [entry["resumed_from"] for entry in history] == [None, "checkpoint-1"]
    for n in (2, 3):  # written again by the resumed run, and complete
        assert checkpoint_problem(out / f"checkpoint-{n}") is None
        assert json.loads((out / f"checkpoint-{n}" / "trainer_state.json").read_text())["global_step"] == n


def test_a_changed_file_size_is_incomplete(tmp_path):
    folder = tmp_path / "checkpoint-5"
    folder.mkdir()
    (folder / "trainer_state.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"12345678")
    files = {"trainer_state.json": 2, "model.safetensors": 8}
    (folder / COMPLETE_FILE).write_text(json.dumps({"global_step": 5, "world_size": 1, "files": files}))
    assert checkpoint_problem(folder) is None
    (folder / "model.safetensors").write_bytes(b"1234")
    assert checkpoint_problem(folder) == "model.safetensors has 4 bytes, 8 were written"
    (folder / COMPLETE_FILE).write_text('{"files": ')
    assert "is unreadable" in checkpoint_problem(folder)



def fake_checkpoint(out, step: int, complete: bool):
    folder = out / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "trainer_state.json").write_text("{}")
    if complete:
        files = {"trainer_state.json": 2}
        (folder / COMPLETE_FILE).write_text(json.dumps({"global_step": step, "world_size": 1, "files": files}))
    return folder


def test_rotation_keeps_the_newest_complete_checkpoint(tmp_path):
    from skinflow.train.callbacks import CompleteCheckpoints

    for step, complete in ((1, True), (2, True), (3, False)):  # 3: a save cut short
        fake_checkpoint(tmp_path, step, complete)
    CompleteCheckpoints(tmp_path, save_total_limit=1)._rotate(newest=3)
    # an incomplete checkpoint does not count towards the limit: the newest complete one stays, to resume from
    assert sorted(path.name for path in tmp_path.iterdir()) == ["checkpoint-2", "checkpoint-3"]
    assert last_checkpoint(tmp_path).name == "checkpoint-2"
