"""GPU check of the vLLM plugin alone (docs/verl.md), for a CUDA machine with vLLM and this package installed.

    python recipes/verl/vllm_check.py [--dir runs/verl/vllm_check]

Not run yet (no GPU machine with vLLM was available). What it checks, on the tiny default in float32:

1. vLLM builds the DVE model through the plugin (the entry point is installed, the model class is skinflow's);
2. greedy generation with one image gives the same tokens in vLLM as in transformers (the DVE vision tower per
   image, the name mapping at model load);
3. a weight sync of changed DVE parameters through the model's ``load_weights`` (as verl and TRL do), followed by
   :func:`skinflow.verl.vllm_plugin.reset_image_caches`, gives the tokens transformers gives with the changed weights.

Exit status 0 and ``vllm check: OK`` when all hold; an ``AssertionError`` naming the step otherwise.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import sys
from pathlib import Path

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # one process: the model is reachable for the sync
os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")  # collective_rpc with a function

PROMPT = "Describe the lesion."
NEW_TOKENS = 12


def hf_greedy(model, processor, image) -> list[int]:
    """Greedy completion token ids of the HF model for the check's prompt."""
    import torch

    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPT}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[text], images=[image], return_tensors="pt").to(model.device)
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False)
    return output[0, inputs["input_ids"].shape[1]:].tolist()


def vllm_greedy(llm, processor, image) -> list[int]:
    """Greedy completion token ids of vLLM for the same prompt."""
    from vllm import SamplingParams

    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPT}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    params = SamplingParams(temperature=0.0, max_tokens=NEW_TOKENS, ignore_eos=True)
    (result,) = llm.generate({"prompt": text, "multi_modal_data": {"image": image}}, params)
    return list(result.outputs[0].token_ids)


def _model_class_name(worker) -> str:
    return type(worker.model_runner.model).__name__


def _load(worker, weights) -> int:
    return len(worker.model_runner.model.load_weights(weights))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=Path("runs/verl/vllm_check"))
    args = parser.parse_args()

    import torch
    from PIL import Image
    from vllm import LLM

    from skinflow.model import load_pretrained
    from skinflow.model.processor import load_processor
    from skinflow.verl.convert import write_tiny
    from skinflow.verl.vllm_plugin import reset_image_caches

    groups = {entry.name for entry in importlib.metadata.entry_points(group="vllm.general_plugins")}
    assert "skinflow_dve" in groups, "step 1: the vllm.general_plugins entry point is not installed (pip install -e .)"
    model_dir = args.dir / "model"
    if not (model_dir / "config.json").is_file():
        args.dir.mkdir(parents=True, exist_ok=True)
        write_tiny(model_dir)
    image = Image.new("RGB", (112, 112), (190, 110, 80))
    model = load_pretrained(model_dir).to("cuda").eval()
    processor = load_processor(model_dir)
    llm = LLM(model=str(model_dir), dtype="float32", enforce_eager=True, max_model_len=1024,
              gpu_memory_utilization=0.3, limit_mm_per_prompt={"image": 1}, seed=0)
    names = llm.collective_rpc(_model_class_name)
    assert names == ["SkinFlowQwen2_5_VLForConditionalGeneration"], f"step 1: vLLM built {names}"

    expected, got = hf_greedy(model, processor, image), vllm_greedy(llm, processor, image)
    assert got == expected, f"step 2: vLLM {got} != transformers {expected}"

    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "mlp.up_proj.dft_weight" in name or "mlp.down_proj.KSM_Global" in name:
                parameter.add_(0.05 * torch.randn_like(parameter))
    changed = [(name, tensor.detach().cpu()) for name, tensor in model.state_dict().items() if ".visual." in name]
    loaded = llm.collective_rpc(_load, args=(changed,))
    assert loaded and loaded[0] > 0, "step 3: load_weights loaded nothing"
    reset_image_caches(llm)
    expected, got = hf_greedy(model, processor, image), vllm_greedy(llm, processor, image)
    assert got == expected, f"step 3: after the sync vLLM {got} != transformers {expected}"
    print("vllm check: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
