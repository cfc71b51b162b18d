"""verl's RLHFDataset reads skinflow's parquet (both stages) with the tiny processor, and the images of a row go
through verl's vision step (``RLHFDataset.process_vision_info``: qwen_vl_utils) and its processor call into the
image inputs the DVE model takes."""

import asyncio

import pytest
import torch

from skinflow.data.export import prompt_text
from tests.verl.conftest import RECIPES, compose_recipe

STAGES = {"caption": RECIPES / "qwen2_5_vl_7b_stage1_caption.yaml",
          "diagnosis": RECIPES / "qwen2_5_vl_7b_stage2_diagnosis.yaml"}


@pytest.mark.parametrize("stage", list(STAGES))
def test_rlhf_dataset_yields_the_image_inputs(stage, parquet_files, tiny_dir, records):
    from verl.utils.dataset.rl_dataset import RLHFDataset
    from verl.utils.tokenizer import build_multimodal_processor_inputs
    from verl.workers.config import HFModelConfig

    from skinflow.model import load_pretrained

    config = compose_recipe(STAGES[stage], {"TRAIN": str(parquet_files[stage])})
    model_config = HFModelConfig(path=str(tiny_dir), external_lib="skinflow.verl.plugin",
                                 override_config={"attn_implementation": "sdpa"})
    processor = model_config.processor
    dataset = RLHFDataset(config.data.train_files, model_config.tokenizer, config.data, processor=processor)
    assert len(dataset) == len(records)  # none filtered as overlong (data.filter_overlong_prompts is on)
    patch_size = processor.image_processor.patch_size  # what verl's agent loop passes (agent_loop.py)
    assert patch_size == 8
    model = load_pretrained(tiny_dir).eval()
    for index in (0, len(dataset) - 1):
        row = dataset[index]
        (message,) = row["raw_prompt"]
        image_part, text_part = message["content"]
        assert image_part["type"] == "image" and text_part == {"type": "text", "text": prompt_text(stage)}
        images, videos = asyncio.run(RLHFDataset.process_vision_info(row["raw_prompt"], patch_size, config.data))
        assert len(images) == 1 and images[0].size == (112, 112) and not videos
        text = processor.apply_chat_template(row["raw_prompt"], add_generation_prompt=True, tokenize=False)
        inputs = build_multimodal_processor_inputs(processor, text=[text], images=images, videos=None)
        assert inputs["image_grid_thw"].tolist() == [[1, 14, 14]]
        assert tuple(inputs["pixel_values"].shape) == (196, 3 * 2 * 8 * 8)
        image_tokens = int((inputs["input_ids"] == model.config.image_token_id).sum())
        assert image_tokens == 196 // 4
        with torch.no_grad():  # the vision tower (verl's actor patches the model's forward class-wide: test_actor)
            embeds = model.model.visual(inputs["pixel_values"], grid_thw=inputs["image_grid_thw"]).pooler_output
        assert embeds.shape == (image_tokens, model.config.text_config.hidden_size) and torch.isfinite(embeds).all()
        assert row["extra_info"]["index"] == index and row["extra_info"]["stage"] == stage
