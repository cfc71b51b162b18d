"""The verl recipes compose with verl's own Hydra config (no unknown keys), pass verl's validation, build verl's
config dataclasses, and hold the paper's settings; the launcher prints and refuses as documented."""

import shlex

import pytest
from hydra.errors import ConfigCompositionException

from skinflow.verl.recipes import RecipeError, load_recipe, main
from tests.verl.conftest import RECIPES, compose_recipe, recipe_paths

STAGE1 = RECIPES / "qwen2_5_vl_7b_stage1_caption.yaml"
STAGE2 = RECIPES / "qwen2_5_vl_7b_stage2_diagnosis.yaml"
SMOKE = RECIPES / "tiny_smoke_1gpu.yaml"


def test_the_three_recipes_exist():
    assert recipe_paths() == sorted([STAGE1, STAGE2, SMOKE])


@pytest.mark.parametrize("path", recipe_paths(), ids=lambda p: p.stem)
def test_recipe_composes_validates_and_builds_verls_dataclasses(path):
    from omegaconf import open_dict
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import omega_conf_to_dataclass, validate_config

    config = compose_recipe(path)
    assert need_reference_policy(config) and not need_critic(config)
    validate_config(config, use_reference_policy=True, use_critic=False)
    actor = omega_conf_to_dataclass(config.actor_rollout_ref.actor)
    assert actor.strategy == "fsdp2" and actor.engine.strategy == "fsdp2"
    # the reference: renamed as verl's engine worker does before building it (engine_workers.init_model)
    ref_config = config.actor_rollout_ref.ref.copy()
    with open_dict(ref_config):
        ref_config.ppo_mini_batch_size = config.actor_rollout_ref.actor.ppo_mini_batch_size
        ref_config.ppo_micro_batch_size = ref_config.pop("log_prob_micro_batch_size", None)
        ref_config.ppo_micro_batch_size_per_gpu = ref_config.pop("log_prob_micro_batch_size_per_gpu", None)
        ref_config.use_dynamic_bsz = ref_config.pop("log_prob_use_dynamic_bsz", False)
        ref_config.ppo_max_token_len_per_gpu = ref_config.pop("log_prob_max_token_len_per_gpu", None)
    ref = omega_conf_to_dataclass(ref_config)
    assert ref.strategy == "fsdp2" and ref.engine.strategy == "fsdp2"
    rollout = omega_conf_to_dataclass(config.actor_rollout_ref.rollout)
    assert rollout.name == "vllm"
    assert config.actor_rollout_ref.model.external_lib == "skinflow.verl.plugin"
    assert "hf_model" in config.actor_rollout_ref.actor.checkpoint.save_contents
    assert config.algorithm.adv_estimator == "grpo"
    assert config.actor_rollout_ref.actor.use_kl_loss and config.actor_rollout_ref.actor.kl_loss_coef == 0.04
    assert config.actor_rollout_ref.actor.kl_loss_type == "low_var_kl"
    assert config.actor_rollout_ref.actor.loss_agg_mode == "seq-mean-token-mean"
    assert config.data.image_key == "images"


@pytest.mark.parametrize("path", recipe_paths(), ids=lambda p: p.stem)
def test_reward_entry_resolves_through_verls_loader(path):
    from verl.utils.import_utils import load_extern_object

    from skinflow.rewards.verl import compute_score

    config = compose_recipe(path)
    reward = config.reward.custom_reward_function
    assert load_extern_object(module_path=reward.path, object_name=reward.name) is compute_score


def test_paper_settings_of_the_two_stages():
    stage1, stage2 = compose_recipe(STAGE1), compose_recipe(STAGE2)
    assert stage1.actor_rollout_ref.actor.optim.lr == 1e-6
    assert stage2.actor_rollout_ref.actor.optim.lr == 5e-7
    for config in (stage1, stage2):
        assert config.actor_rollout_ref.rollout.n == 8
        assert config.trainer.n_gpus_per_node == 8 and config.trainer.nnodes == 1
        assert config.actor_rollout_ref.actor.optim.weight_decay == 0.0
        assert config.actor_rollout_ref.actor.clip_ratio == 0.2
    assert stage1.reward.custom_reward_function.reward_kwargs == {"format_weight": 0.1, "field_weights": "uniform"}
    assert stage2.reward.custom_reward_function.reward_kwargs == {"format_weight": 0.1, "rank_weights": "linear"}
    smoke = compose_recipe(SMOKE)
    assert smoke.trainer.n_gpus_per_node == 1 and smoke.actor_rollout_ref.rollout.tensor_model_parallel_size == 1
    assert smoke.data.image_patch_size == 8 and stage1.data.image_patch_size == 14  # the tiny / Qwen2.5-VL patch


def test_hydra_rejects_an_unknown_key_so_the_composition_check_can_fail():
    with pytest.raises(ConfigCompositionException):
        compose_recipe(SMOKE, extra=("actor_rollout_ref.rollout.no_such_key=1",))


def test_variables_fill_the_overrides():
    config = compose_recipe(STAGE1, {"MODEL": "/m", "TRAIN": "/t.parquet", "VAL": "/v.parquet", "STEPS": "7"})
    assert config.actor_rollout_ref.model.path == "/m"
    assert config.data.train_files == "/t.parquet" and config.data.val_files == "/v.parquet"
    assert config.trainer.total_training_steps == 7


def test_launcher_prints_the_verl_command(capsys):
    status = main([str(SMOKE), "MODEL=/m", "TRAIN=/t", "VAL=/v", "--print", "--", "trainer.save_freq=1"])
    assert status == 0
    words = shlex.split(capsys.readouterr().out)
    assert words[1:3] == ["-m", "verl.trainer.main_ppo"]
    assert "actor_rollout_ref.model.path=/m" in words and words[-1] == "trainer.save_freq=1"


def test_launcher_refuses_a_missing_or_unknown_variable(capsys):
    assert main([str(SMOKE), "TRAIN=/t", "--print"]) == 2
    message = capsys.readouterr().err.strip()
    assert message.startswith("error: ") and "['MODEL', 'VAL']" in message and len(message.splitlines()) == 1
    assert main([str(SMOKE), "MODEL=/m", "TRAIN=/t", "VAL=/v", "BOGUS=1", "--print"]) == 2
    assert "unknown variables ['BOGUS']" in capsys.readouterr().err


@pytest.mark.parametrize(("text", "message"), [
    ("description: x\noverrides: [+trainer.foo=1]\n", "only keys under"),
    ("description: x\noverrides: [reward.custom_reward_function.reward_kwargs.k=1]\n", "add it with '+"),
    ("description: x\noverrides: ['data.train_files={TRAIN}']\n", "{TRAIN}, which is not among"),
    ("description: x\noverrides: [a=1, a=2]\n", "more than once"),
    ("description: x\nextra: 1\noverrides: [a=1]\n", "unknown keys ['extra']"),
    ("overrides: [a=1]\n", "description must be"),
    ("description: x\nvariables: {lower: 1}\noverrides: [a=1]\n", "UPPER_CASE"),
])
def test_bad_recipe_files_are_refused_naming_the_file(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError) as error:
        load_recipe(path)
    assert str(path) in str(error.value) and message in str(error.value)


def test_the_launch_command_parses_in_verls_own_entry_point():
    """The exact command the launcher runs, through verl's ``@hydra.main`` (``--cfg job``: compose and print only)."""
    import subprocess

    from tests import REPO

    command = load_recipe(STAGE1).command({"MODEL": "/models/start", "TRAIN": "/d/t.parquet", "VAL": "/d/v.parquet"})
    result = subprocess.run([*command, "--cfg", "job"], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "path: /models/start" in result.stdout and "lr: 1.0e-06" in result.stdout
