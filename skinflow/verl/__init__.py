"""SkinFlow at scale on verl (Ray, FSDP actors, vLLM rollouts): plugins, recipes and checkpoint conversion.

Nothing here is imported by the rest of skinflow, and importing this package loads neither verl nor vLLM (nor torch):
each module imports what it needs when it is used.

- :mod:`skinflow.verl.plugin`: verl's plugin (``verl.plugins`` entry point, and the module to name in
  ``actor_rollout_ref.model.external_lib``): registers the DVE with transformers in every worker, gives every DVE
  layer its own FSDP2 unit whose parameters stay float32 under bf16 mixed precision, and adapts verl 0.9.1 where it
  would refuse this project (the image-only processor, text-only batches under transformers 5, TRL 1.x).
- :mod:`skinflow.verl.vllm_plugin`: vLLM's plugin (``vllm.general_plugins`` entry point): registers
  :class:`skinflow.verl.vllm_model.SkinFlowQwen2_5_VLForConditionalGeneration` for the Qwen2.5-VL architecture.
- :mod:`skinflow.verl.vision`: the DVE MLP of vLLM's vision tower and its installation (no vLLM import).
- :mod:`skinflow.verl.names`: the mapping of an HF DVE checkpoint's parameter names onto the vLLM model's
  (pure Python, tested on the CPU).
- :mod:`skinflow.verl.recipes`: the Stage I / Stage II / smoke recipes (``recipes/verl/*.yaml``) as verl overrides,
  and their launcher (``python -m skinflow.verl.recipes``).
- :mod:`skinflow.verl.convert`: a verl checkpoint back to an HF directory for ``skinflow diagnose`` / ``evaluate``.

The reward entry is :func:`skinflow.rewards.verl.compute_score`; the data is ``skinflow export --format verl``
(:func:`skinflow.data.export.to_verl_parquet`). See docs/verl.md.
"""

ENTRY_POINTS = {
    "verl.plugins": ("skinflow", "skinflow.verl.plugin:register"),
    "vllm.general_plugins": ("skinflow_dve", "skinflow.verl.vllm_plugin:register"),
}
"""The entry points pyproject.toml must declare: ``group -> (name, "module:object")``."""

__all__ = ["ENTRY_POINTS"]
