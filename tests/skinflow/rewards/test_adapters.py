"""The reward adapters: verl's ``compute_score``, TRL's reward functions, the registry and the settings, and that
``import skinflow.rewards`` stays pure Python."""

import importlib.util
import inspect
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from skinflow.formats import format_caption, format_diagnoses
from skinflow.rewards import (
    CAPTION_PARTS,
    DIAGNOSIS_PARTS,
    REWARDS,
    CaptionRewardConfig,
    CaptionWeights,
    DiagnosisRewardConfig,
    configs_from_mapping,
    score,
)
from skinflow.rewards.trl import caption_reward, diagnosis_reward, make_caption_reward, make_diagnosis_reward
from skinflow.rewards.verl import compute_score
from skinflow.targets import CaptionTarget, DiagnosisTarget, TargetError
from tests import REPO

CAPTION = {"color": "red", "lesion_type": "plaque", "surface": "scaly", "shape": ""}
CAPTION_TRUTH = json.dumps(CaptionTarget(CAPTION).to_json())
DIAGNOSIS_TRUTH = json.dumps(DiagnosisTarget("psoriasis").to_json())
GOOD_CAPTION = format_caption(CAPTION)
SECOND = format_diagnoses(["eczema", "psoriasis"])


# --- verl ---------------------------------------------------------------------------------------------------------


def test_compute_score_has_verls_signature():
    parameters = inspect.signature(compute_score).parameters
    assert list(parameters)[:4] == ["data_source", "solution_str", "ground_truth", "extra_info"]
    assert parameters["extra_info"].default is None
    assert any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def test_compute_score_returns_the_score_and_numeric_parts():
    result = compute_score("skinflow_synthetic", GOOD_CAPTION, CAPTION_TRUTH, {"index": 0})
    assert result["score"] == 1.0 and set(result) == set(CAPTION_PARTS)
    result = compute_score(data_source="x", solution_str=SECOND, ground_truth=DIAGNOSIS_TRUTH, extra_info=None)
    assert result["score"] == pytest.approx(5 / 6) and result["rank"] == 2.0 and set(result) == set(DIAGNOSIS_PARTS)
    for answer in ("", None, 3.5, ["1. psoriasis"], "x" * 200_000):
        for truth in (CAPTION_TRUTH, DIAGNOSIS_TRUTH):
            out = compute_score("x", answer, truth)
            assert all(type(value) is float and math.isfinite(value) for value in out.values())
            assert 0.0 <= out["score"] <= 1.0


def test_compute_score_accepts_the_ground_truth_as_an_object():
    assert compute_score("x", SECOND, json.loads(DIAGNOSIS_TRUTH))["rank"] == 2.0
    assert compute_score("x", GOOD_CAPTION, {"stage": "caption", "caption": CAPTION})["score"] == 1.0


def test_compute_score_reads_the_reward_kwargs():
    assert compute_score("x", SECOND, DIAGNOSIS_TRUTH, rank_weights="reciprocal")["score"] == 0.5
    assert compute_score("x", SECOND, DIAGNOSIS_TRUTH, rank_weights=[1.0, 0.1], k=2)["score"] == 0.1
    wrong_format = json.dumps(CAPTION)
    assert compute_score("x", wrong_format, CAPTION_TRUTH, format_weight=0.5)["score"] == 0.5
    weighted = compute_score("x", "color: red\nlesion type: nodule", CAPTION_TRUTH,
                             field_weights={"color": 1.0, "lesion_type": 1.0}, format_weight=0.0)
    assert weighted["score"] == 0.5
    # what verl's reward loop adds to every call is ignored
    assert compute_score("x", SECOND, DIAGNOSIS_TRUTH, reward_router_address=None,
                         reward_model_tokenizer=None)["rank"] == 2.0


def test_compute_score_refuses_unknown_settings_and_malformed_ground_truths():
    with pytest.raises(ValueError, match="unknown reward settings.*format_wieght"):
        compute_score("x", GOOD_CAPTION, CAPTION_TRUTH, format_wieght=0.1)
    with pytest.raises(ValueError, match="group9_credit"):
        compute_score("x", SECOND, DIAGNOSIS_TRUTH, group9_credit=2)
    with pytest.raises(ValueError, match="not a Fitzpatrick17k label"):
        compute_score("x", SECOND, '{"stage": "diagnosis", "label": "psoriasiss"}')
    with pytest.raises(ValueError, match="not valid JSON"):
        compute_score("x", SECOND, "psoriasis")


def test_compute_score_loads_the_way_verl_loads_a_file(tmp_path):
    """verl's file loader: spec_from_file_location on the module's path, under another module name."""
    path = REPO / "skinflow" / "rewards" / "verl.py"
    spec = importlib.util.spec_from_file_location("custom_module", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.compute_score("x", SECOND, DIAGNOSIS_TRUTH)["rank"] == 2.0


# --- TRL ----------------------------------------------------------------------------------------------------------


def test_trl_rewards_score_plain_and_conversational_completions():
    plain = caption_reward(prompts=["p", "p"], completions=[GOOD_CAPTION, ""],
                           ground_truth=[CAPTION_TRUTH, CAPTION_TRUTH])
    assert plain == [1.0, 0.0]
    conversational = diagnosis_reward(
        prompts=[[{"role": "user", "content": "?"}]] * 3,
        completions=[[{"role": "assistant", "content": SECOND}],
                     [{"role": "assistant", "content": [{"type": "text", "text": "1. psoriasis"}]}],
                     [{"role": "assistant", "content": None}]],
        completion_ids=[[1], [2], [3]], ground_truth=[DIAGNOSIS_TRUTH] * 3)
    assert conversational == pytest.approx([5 / 6, 1.0, 0.0])
    assert all(type(value) is float for value in conversational)


def test_trl_rewards_take_the_dataset_columns_and_trainer_arguments_as_trl_passes_them():
    logged, extra = {}, {}
    rewards = diagnosis_reward(
        prompts=["p"] * 2, completions=[SECOND, "1. psoriasis"], completion_ids=[[0], [0]],
        ground_truth=[DIAGNOSIS_TRUTH] * 2, stage=["diagnosis"] * 2, data_source=["skinflow_synthetic"] * 2,
        id=["a", "b"], split=["train"] * 2, label=["psoriasis"] * 2, skin_type=[3, None], trainer_state=object(),
        log_metric=lambda name, value: logged.setdefault(name, value),
        log_extra=lambda column, values: extra.setdefault(column, values),
    )
    assert rewards == pytest.approx([5 / 6, 1.0])
    assert logged["rewards/diagnosis_reward/rank"] == 1.5 and logged["rewards/diagnosis_reward/top1"] == 0.5
    assert extra["diagnosis_reward/rank"] == [2.0, 1.0]


def test_trl_caption_reward_logs_field_means_over_the_targets_that_know_them():
    logged = {}
    partial = json.dumps(CaptionTarget({"location": "arm"}).to_json())
    caption_reward(completions=[GOOD_CAPTION, "location: arm"], ground_truth=[CAPTION_TRUTH, partial],
                   log_metric=lambda name, value: logged.setdefault(name, value))
    assert logged["rewards/caption_reward/field/color"] == 1.0
    assert logged["rewards/caption_reward/field/location"] == 1.0  # only the second target knows it
    assert "rewards/caption_reward/field/number" not in logged
    assert logged["rewards/caption_reward/hallucinations"] == 0.0


def test_trl_rewards_with_other_settings_keep_their_name():
    reward = make_diagnosis_reward(rank_weights="reciprocal", name="dx_reciprocal")
    assert reward.__name__ == "dx_reciprocal" and reward.config.rank_weights == "reciprocal"
    assert reward(completions=[SECOND], ground_truth=[DIAGNOSIS_TRUTH]) == [0.5]
    assert caption_reward.__name__ == "caption_reward" and diagnosis_reward.__name__ == "diagnosis_reward"
    config = CaptionRewardConfig(format_weight=0.0)
    assert make_caption_reward(config)(completions=[json.dumps(CAPTION)], ground_truth=[CAPTION_TRUTH]) == [1.0]
    with pytest.raises(ValueError, match="either config or settings"):
        make_caption_reward(config, format_weight=0.2)
    with pytest.raises(ValueError, match="unknown"):
        make_caption_reward(rank_weights="linear")


def test_trl_rewards_name_what_is_wrong_with_their_inputs():
    with pytest.raises(ValueError, match="ground_truth"):
        caption_reward(prompts=["p"], completions=[GOOD_CAPTION])
    with pytest.raises(ValueError, match="2 ground truths for 1 completions"):
        caption_reward(completions=[GOOD_CAPTION], ground_truth=[CAPTION_TRUTH] * 2)
    with pytest.raises(TargetError, match=r"ground_truth\[1\].*expected 'caption'"):
        caption_reward(completions=[GOOD_CAPTION] * 2, ground_truth=[CAPTION_TRUTH, DIAGNOSIS_TRUTH])
    with pytest.raises(TargetError, match=r"ground_truth\[0\].*not valid JSON"):
        diagnosis_reward(completions=[SECOND], ground_truth=["psoriasis"])
    with pytest.raises(ValueError, match="completions must be a list"):
        diagnosis_reward(completions="1. psoriasis", ground_truth=[DIAGNOSIS_TRUTH])


def test_the_installed_trl_passes_what_the_reward_functions_use():
    """TRL's GRPOTrainer hands reward functions the dataset columns, log_metric and log_extra (read from its source,
    without importing it)."""
    spec = importlib.util.find_spec("trl")
    if spec is None or spec.origin is None:
        pytest.skip("trl is not installed")
    source = (Path(spec.origin).parent / "trainer" / "grpo_trainer.py").read_text(encoding="utf-8")
    assert 'reward_kwargs["log_metric"]' in source and 'reward_kwargs["log_extra"]' in source
    assert "prompts=prompts, completions=completions, completion_ids=completion_ids_list, **reward_kwargs" in source


# --- registry and settings -------------------------------------------------------------------------------------


def test_the_registry():
    assert set(REWARDS) == {"caption", "diagnosis"}
    caption, diagnosis = REWARDS["caption"], REWARDS["diagnosis"]
    assert caption.config_type is CaptionRewardConfig and diagnosis.config_type is DiagnosisRewardConfig
    assert caption.score(GOOD_CAPTION, CaptionTarget(CAPTION)).score == 1.0
    assert diagnosis.score(SECOND, DiagnosisTarget("psoriasis")).parts["rank"] == 2.0
    assert set(caption.parts) == set(CAPTION_PARTS) and set(diagnosis.parts) == set(DIAGNOSIS_PARTS)
    assert score(SECOND, DIAGNOSIS_TRUTH).score == pytest.approx(5 / 6)


def test_settings_from_a_yaml_like_mapping(tmp_path):
    weights = CaptionWeights.given({"color": 2.0, "lesion_type": 1.0})
    path = tmp_path / "weights.json"
    weights.save(path)
    caption, diagnosis = configs_from_mapping({
        "format_weight": 0.2, "field_weights": str(path), "rank_weights": [1, 0.5, 0.25], "group9_credit": 0.3, "k": 3,
    })
    assert caption.format_weight == 0.2 and caption.field_weights == weights
    assert diagnosis.rank_weights == (1.0, 0.5, 0.25) and diagnosis.group9_credit == 0.3 and diagnosis.k == 3
    assert configs_from_mapping(None) == (CaptionRewardConfig(), DiagnosisRewardConfig())
    assert json.loads(json.dumps(diagnosis.to_json())) == diagnosis.to_json()
    assert DiagnosisRewardConfig.from_mapping(diagnosis.to_json()) == diagnosis
    with pytest.raises(ValueError, match=r"unknown reward settings \['lambda'\]"):
        configs_from_mapping({"lambda": 0.1})
    with pytest.raises(ValueError, match="unknown DiagnosisRewardConfig settings"):
        DiagnosisRewardConfig.from_mapping({"format_weight": 0.1})
    with pytest.raises(ValueError, match="must be a mapping"):
        configs_from_mapping(["format_weight"])
    with pytest.raises(ValueError, match="field_weights must be"):
        CaptionRewardConfig(field_weights=3)


# --- pure Python ------------------------------------------------------------------------------------------------


def test_importing_the_rewards_loads_neither_torch_transformers_nor_pil():
    code = (
        "import sys\n"
        "import skinflow.rewards, skinflow.rewards.verl, skinflow.rewards.trl, skinflow.rewards.noisy\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'PIL', 'numpy', 'trl') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = set(filter(None, done.stdout.strip().split(",")))
    assert not loaded & {"torch", "transformers", "PIL"}, f"import skinflow.rewards loaded {sorted(loaded)}"
