"""The pieces the training issues stand on fit TRL: the tiny DVE model, its processor and the exported TRL dataset
run through TRL's GRPOTrainer, with every image reaching the vision tower as its own sample."""

import json

import pytest
import torch

from skinflow.data.export import to_trl_dataset
from skinflow.data.synthetic import generate
from skinflow.formats import parse_diagnoses
from skinflow.model import tiny

trl = pytest.importorskip("trl")


def label_in_answer(completions, ground_truth, **_) -> list[float]:
    return [float(json.loads(truth)["label"] in parse_diagnoses(c[0]["content"])) for c, truth in
            zip(completions, ground_truth)]


def answer_length(completions, **_) -> list[float]:
    """A reward that differs between the sampled answers, so GRPO's advantages are not all zero."""
    return [len(c[0]["content"]) / 10.0 for c in completions]


def test_grpo_steps_on_the_tiny_default(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, processor = tiny.build()
    grids = []
    model.model.visual.register_forward_pre_hook(
        lambda module, args, kwargs: grids.append(kwargs["grid_thw"].clone()), with_kwargs=True
    )
    before = {n: p.detach().clone() for n, p in model.named_parameters() if "visual.blocks.3.mlp.down_proj" in n}
    dataset = to_trl_dataset(generate(8, progress=False), stage="diagnosis", progress=False)
    config = trl.GRPOConfig(
        output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=4, max_completion_length=8,
        max_steps=2, report_to=[], use_cpu=True, save_strategy="no", learning_rate=1e-3, beta=0.0, seed=0,
    )
    trainer = trl.GRPOTrainer(model=model, reward_funcs=[label_in_answer, answer_length], args=config, train_dataset=dataset,
                              processing_class=processor)
    trainer.train()
    assert grids and all(g.shape[1] == 3 and (g[:, 1:] == 14).all() for g in grids)
    assert any(entry.get("num_tokens", 0) > 4 * 49 for entry in trainer.state.log_history)
    after = dict(model.named_parameters())
    assert all(torch.isfinite(after[n]).all() for n in before)
    assert any(not torch.equal(after[n], before[n]) for n in before)  # GRPO's gradient reached the DVE layer
