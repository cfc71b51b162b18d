"""TrainConfig: YAML round trip, documented fields, errors naming the key; the repository's recipes load."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from skinflow.train import TrainConfig, field_help, load_config
from tests import REPO

RECIPES = sorted((REPO / "recipes").glob("*.yaml"))


def test_every_field_is_documented():
    docs = field_help()
    assert set(docs) == {f.name for f in dataclasses.fields(TrainConfig)}
    assert all(len(text) > 10 for text in docs.values())


def test_yaml_round_trip(tmp_path):
    config = TrainConfig(stage="diagnosis", model="/m", data="d.jsonl", out="o", max_steps=7, learning_rate=5e-7,
                         batch_size=16, num_generations=8, beta=0.02, epsilon=0.3, dve_blocks=[1, 3],
                         dve_projections=["qkv", "down_proj"], dve_num_bases=2, reward={"group9_credit": 0.5})
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config.to_json()))
    assert load_config(path) == config
    assert load_config(path, max_steps=9, seed=None).max_steps == 9  # None overrides keep the file's value


def test_defaults_set_the_papers_kl_term():
    assert TrainConfig().beta > 0 and TrainConfig().loss_type == "grpo"


@pytest.mark.parametrize(("text", "named"), [
    ("stage: rl\n", "stage"),
    ("learning_rate: fast\n", "learning_rate"),
    ("learning_rate: 0\n", "learning_rate"),
    ("max_steps: 0\n", "max_steps"),
    ("max_steps: 1.5\n", "max_steps"),
    ("beta: -1\n", "beta"),
    ("epsilon: .nan\n", "epsilon"),
    ("dve: yes please\n", "dve"),
    ("dve_projections: [qkv, attn]\n", "dve_projections[1]"),
    ("dve_blocks: three\n", "dve_blocks"),
    ("reward: {format_weight: 2}\n", "format_weight"),
    ("reward: {temperature: 1}\n", "temperature"),
    ("lerning_rate: 1e-6\n", "lerning_rate"),
    ("batch_size: 6\nnum_generations: 4\n", "num_generations"),
    ("- a list\n", "mapping"),
    ("stage: [unclosed\n", "not valid YAML"),
])
def test_bad_yaml_names_the_key(tmp_path, text, named):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match="bad.yaml") as error:
        load_config(path)
    assert named in str(error.value)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_config(tmp_path / "none.yaml")


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipes_load(path):
    config = load_config(path)
    assert config.beta >= 0 and config.learning_rate > 0


def test_the_recipes_hold_the_papers_settings():
    stage1 = load_config(REPO / "recipes" / "qwen2_5_vl_7b_stage1_caption.yaml")
    stage2 = load_config(REPO / "recipes" / "qwen2_5_vl_7b_stage2_diagnosis.yaml")
    assert (stage1.stage, stage1.learning_rate, stage1.bf16, stage1.optimizer) == ("caption", 1e-6, True, "adamw_torch")
    assert (stage2.stage, stage2.learning_rate, stage2.bf16) == ("diagnosis", 5e-7, True)
    assert stage1.beta > 0 and stage2.beta > 0
