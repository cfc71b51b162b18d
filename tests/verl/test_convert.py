"""skinflow.verl.convert: verl's checkpoint layout back to an HF directory that skinflow loads (atomically, every
tensor checked), the DVE start checkpoint, and one-line errors for bad input."""

import shutil

import pytest
import torch

from skinflow.verl.convert import export_hf, find_hf_dir, main, write_dve


@pytest.fixture
def verl_run(tmp_path, tiny_dir):
    """A run directory as verl writes it with hf_model in save_contents: steps 2 and 5, HF files under
    ``global_step_N/actor/huggingface`` (the weights there are the tiny model's)."""
    run = tmp_path / "run"
    for step in (2, 5):
        actor = run / f"global_step_{step}" / "actor"
        shutil.copytree(tiny_dir, actor / "huggingface")
        (actor / "model_world_size_1_rank_0.pt").write_bytes(b"fsdp shard (not read)")
    return run


def test_finds_the_newest_step_or_the_one_asked(verl_run):
    assert find_hf_dir(verl_run) == verl_run / "global_step_5" / "actor" / "huggingface"
    assert find_hf_dir(verl_run, step=2) == verl_run / "global_step_2" / "actor" / "huggingface"
    assert find_hf_dir(verl_run / "global_step_2") == verl_run / "global_step_2" / "actor" / "huggingface"
    assert find_hf_dir(verl_run / "global_step_2" / "actor") == verl_run / "global_step_2" / "actor" / "huggingface"
    with pytest.raises(FileNotFoundError, match=r"no global_step_3 \(steps there: \[2, 5\]\)"):
        find_hf_dir(verl_run, step=3)


def test_exports_an_hf_directory_skinflow_loads(verl_run, tmp_path, tiny_dir):
    from skinflow.model import load_pretrained
    from skinflow.model.processor import load_processor

    out = export_hf(verl_run, tmp_path / "stage1-hf")
    model = load_pretrained(out)
    reference = load_pretrained(tiny_dir).state_dict()
    assert all(torch.equal(model.state_dict()[name], tensor) for name, tensor in reference.items())
    assert model.config.vision_config.dve["blocks"] == [2, 3]
    load_processor(out, config=model.config)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".stage1-hf.")]  # no staging left


def test_without_hf_weights_the_error_says_how_to_get_them(verl_run):
    (verl_run / "global_step_5" / "actor" / "huggingface" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="save_contents holds hf_model.*verl.model_merger merge"):
        find_hf_dir(verl_run)


def test_refuses_an_existing_output_and_leaves_it(verl_run, tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="out: .* exists"):
        export_hf(verl_run, out)
    assert (out / "keep.txt").read_text() == "x"


def test_cli_errors_are_one_line_with_status_2(tmp_path, capsys):
    assert main(["hf", str(tmp_path / "nothing"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: checkpoint ") and "not a directory" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_dve_start_checkpoint_from_a_plain_qwen(tmp_path):
    from skinflow.model import load_pretrained, tiny
    from skinflow.verl.convert import save_model_dir

    plain, processor = tiny.build(dve=False)
    source = save_model_dir(plain, processor, tmp_path / "plain")
    out = write_dve(source, tmp_path / "dve", blocks=[3], projections=["up_proj"], num_bases=2)
    model = load_pretrained(out)
    assert model.config.vision_config.dve == {"blocks": [3], "projections": ["up_proj"], "num_bases": 2}
    assert type(model.model.visual.blocks[3].mlp.up_proj).__name__ == "DVELinear"
