"""verl's own reward path calls skinflow's compute_score on rows of skinflow's parquet: the recipes' config goes
through verl's ``load_reward_manager`` (as its reward-loop worker calls it), and the naive reward manager scores
tokenized responses of the rows read by verl's ``RLHFDataset``."""

import json

import numpy as np
import pytest
import torch

from skinflow.formats import format_caption, format_diagnoses
from skinflow.rewards.verl import compute_score
from tests.verl.conftest import RECIPES, compose_recipe

STAGES = {"caption": RECIPES / "qwen2_5_vl_7b_stage1_caption.yaml",
          "diagnosis": RECIPES / "qwen2_5_vl_7b_stage2_diagnosis.yaml"}


def _rows(parquet, tiny_dir, config):
    from transformers import AutoProcessor
    from verl.utils.dataset.rl_dataset import RLHFDataset

    processor = AutoProcessor.from_pretrained(tiny_dir)
    dataset = RLHFDataset(str(parquet), processor.tokenizer, config.data, processor=processor)
    return processor.tokenizer, [dataset[i] for i in range(len(dataset))]


def _item(tokenizer, row, response: str, pad: int = 3):
    from verl import DataProto

    prompt = torch.tensor([tokenizer.encode("prompt")])
    ids = tokenizer.encode(response)
    responses = torch.tensor([ids + [tokenizer.pad_token_id] * pad])
    mask = torch.cat([torch.ones_like(prompt), torch.tensor([[1] * len(ids) + [0] * pad])], dim=1)
    non_tensors = {key: np.array([row[key]], dtype=object) for key in ("data_source", "reward_model", "extra_info")}
    return DataProto.from_dict(tensors={"prompts": prompt, "responses": responses, "attention_mask": mask},
                               non_tensors=non_tensors)


def _answer(stage: str, record) -> str:
    return format_caption(record["caption"]) if stage == "caption" else format_diagnoses([record["label"]])


@pytest.mark.parametrize("stage", list(STAGES))
def test_verls_reward_manager_calls_compute_score_on_our_rows(stage, parquet_files, tiny_dir, records):
    from verl.trainer.ppo.reward import load_reward_manager

    config = compose_recipe(STAGES[stage], {"TRAIN": str(parquet_files[stage]), "VAL": str(parquet_files[stage])})
    tokenizer, rows = _rows(parquet_files[stage], tiny_dir, config)
    assert len(rows) == len(records)
    manager = load_reward_manager(config, tokenizer, reward_router_address=None, reward_model_tokenizer=None)
    assert type(manager).__name__ == "NaiveRewardManager"
    kwargs = dict(config.reward.custom_reward_function.reward_kwargs)
    for row in rows:
        record = records[row["extra_info"]["index"]]
        assert json.loads(row["reward_model"]["ground_truth"])["stage"] == stage
        right, wrong = _answer(stage, record), "I cannot tell."
        results = {}
        for answer in (right, wrong):
            output = manager.loop.run_until_complete(manager.run_single(_item(tokenizer, row, answer)))
            decoded = tokenizer.decode(tokenizer.encode(answer), skip_special_tokens=True)
            expected = compute_score(row["data_source"], decoded, row["reward_model"]["ground_truth"],
                                     row["extra_info"], **kwargs)
            assert output["reward_score"] == expected["score"]
            assert output["reward_extra_info"] == expected
            results[answer] = output["reward_score"]
        assert results[right] == pytest.approx(1.0) and results[wrong] < 0.2, results


def test_reward_settings_reach_compute_score(parquet_files, tiny_dir):
    """A reward_kwargs key compute_score does not know is an error naming it, through verl's wrapper."""
    from verl.trainer.ppo.reward import load_reward_manager

    config = compose_recipe(STAGES["caption"], extra=("+reward.custom_reward_function.reward_kwargs.bogus=1",))
    tokenizer, rows = _rows(parquet_files["caption"], tiny_dir, config)
    manager = load_reward_manager(config, tokenizer, reward_router_address=None, reward_model_tokenizer=None)
    with pytest.raises(ValueError, match="bogus"):
        manager.loop.run_until_complete(manager.run_single(_item(tokenizer, rows[0], "color: red")))
