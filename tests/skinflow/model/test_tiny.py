"""The embedded tiny default: tokenizer, chat template, image-only processor, model; offline save and reload."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

import skinflow  # noqa: F401  (registers the DVE and the processor with transformers)
from skinflow.formats import CAPTION_PROMPT
from skinflow.model import tiny
from skinflow.model.dve import DVELinear
from skinflow.model.processor import ImageOnlyQwenVLProcessor
from skinflow.taxonomy import LABELS


@pytest.fixture(scope="module")
def built():
    return tiny.build()


def random_image(width: int, height: int, seed: int) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def user_turn(text: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]


def test_tokenizer_round_trips_any_text_and_keeps_special_tokens_whole(built):
    tokenizer = built[1].tokenizer
    assert [tokenizer.convert_tokens_to_ids(token) for token in tiny.SPECIAL_TOKENS] == list(range(14))
    text = "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Ünïcödé 皮肤 😀 tab\t 42%<|im_end|>"
    ids = tokenizer(text).input_ids
    assert ids[:5] == [1, *tokenizer("user\n").input_ids, 9, 12][:5]
    assert tokenizer.decode(ids) == text
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"


def test_tokenizer_is_trained_on_the_project_vocabulary():
    tokenizer = tiny.build_tokenizer()
    assert tokenizer.get_vocab() == tiny.build_tokenizer().get_vocab()  # deterministic
    label_tokens = [len(tokenizer(label).input_ids) for label in LABELS]
    characters = [len(label.encode()) for label in LABELS]
    # a byte-level tokenizer with no merges would spend one token per byte
    assert sum(label_tokens) < 0.3 * sum(characters)
    assert len(tokenizer(CAPTION_PROMPT).input_ids) < 0.3 * len(CAPTION_PROMPT)


def test_chat_template_follows_the_qwen2_vl_layout(built):
    text = built[1].apply_chat_template(user_turn("What is it?"), add_generation_prompt=True, tokenize=False)
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What is it?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    conversation = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": [{"type": "text", "text": "hello"}]}]
    assert built[1].apply_chat_template(conversation, tokenize=False) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
        "<|im_start|>assistant\nhello<|im_end|>\n"
    )


def test_processor_expands_each_image_to_its_tokens(built):
    processor = built[1]
    text = processor.apply_chat_template(user_turn("x"), add_generation_prompt=True, tokenize=False)
    batch = processor(images=[random_image(112, 112, 0), random_image(200, 90, 1)], text=[text, text],
                      padding=True, return_tensors="pt")
    grid = batch["image_grid_thw"]
    assert grid[0].tolist() == [1, 14, 14]
    assert int(grid[1].prod()) * tiny.PATCH_SIZE**2 <= 1.1 * tiny.IMAGE_SIZE**2
    image_tokens = (batch["input_ids"] == processor.image_token_id).sum(1)
    assert image_tokens.tolist() == (grid.prod(-1) // tiny.SPATIAL_MERGE_SIZE**2).tolist()
    assert batch["pixel_values"].shape == (int(grid.prod(-1).sum()), 3 * tiny.TEMPORAL_PATCH_SIZE * tiny.PATCH_SIZE**2)
    with pytest.raises(ValueError, match="videos"):
        processor(text=[text], videos=[np.zeros((2, 8, 8, 3))])


def test_model_is_tiny_with_the_dve(built):
    model = built[0]
    assert sum(p.numel() for p in model.parameters()) < 1_500_000
    dve = [name for name, module in model.named_modules() if isinstance(module, DVELinear)]
    assert len(dve) == 6 and all("visual.blocks.2" in n or "visual.blocks.3" in n for n in dve)
    same = tiny.build()[0].state_dict()
    assert all(torch.equal(value, same[key]) for key, value in model.state_dict().items())
    other = tiny.build(seed=1)[0].state_dict()
    assert not torch.equal(model.state_dict()["lm_head.weight"], other["lm_head.weight"])


def test_batched_images_of_different_sizes_match_each_image_alone():
    model, processor = tiny.build(seed=2)
    for module in model.modules():  # make the per-image modulation matter
        if isinstance(module, DVELinear):
            for head in module.KSM_Global.heads():
                torch.nn.init.normal_(head.weight, std=0.5)
    processor.tokenizer.padding_side = "left"
    text = processor.apply_chat_template(user_turn("x"), add_generation_prompt=True, tokenize=False)
    images = [random_image(112, 112, 0), random_image(150, 80, 1)]
    with torch.no_grad():
        together = model(**processor(images=images, text=[text] * 2, padding=True, return_tensors="pt")).logits
        for row, image in enumerate(images):
            alone = model(**processor(images=[image], text=[text], return_tensors="pt")).logits
            torch.testing.assert_close(together[row, -1], alone[0, -1], rtol=1e-4, atol=1e-4)


def test_save_and_reload_offline(tmp_path, monkeypatch, built):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, processor = tiny.build(seed=3)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "qwen2_5_vl"
    reloaded_processor = AutoProcessor.from_pretrained(tmp_path, local_files_only=True)
    reloaded_model = AutoModelForImageTextToText.from_pretrained(tmp_path, local_files_only=True).eval()
    assert isinstance(reloaded_processor, ImageOnlyQwenVLProcessor)
    text = processor.apply_chat_template(user_turn("x"), add_generation_prompt=True, tokenize=False)
    assert reloaded_processor.apply_chat_template(user_turn("x"), add_generation_prompt=True, tokenize=False) == text
    inputs = processor(images=[random_image(120, 100, 2)], text=[text], return_tensors="pt")
    again = reloaded_processor(images=[random_image(120, 100, 2)], text=[text], return_tensors="pt")
    assert all(torch.equal(inputs[key], again[key]) for key in inputs)
    with torch.no_grad():
        torch.testing.assert_close(reloaded_model(**again).logits, model(**inputs).logits)
    assert reloaded_model.generation_config.eos_token_id == model.generation_config.eos_token_id


def test_training_step_reaches_the_dve_layers(built):
    model, processor = tiny.build(seed=4)
    model.train()
    conversation = user_turn("x") + [{"role": "assistant", "content": "1. psoriasis"}]
    text = processor.apply_chat_template(conversation, tokenize=False)
    batch = processor(images=[random_image(112, 112, 5)], text=[text], return_tensors="pt")
    loss = model(**batch, labels=batch["input_ids"]).loss
    loss.backward()
    assert torch.isfinite(loss)
    layer = model.model.visual.blocks[3].mlp.down_proj
    assert layer.dft_weight.grad is not None and layer.dft_weight.grad.abs().sum() > 0
    assert any(head.weight.grad.abs().sum() > 0 for head in layer.KSM_Global.heads())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_bf16_forward_backward_on_gpu():
    model, processor = tiny.build(seed=5)
    model = model.to("cuda", torch.bfloat16).train()
    conversation = user_turn("x") + [{"role": "assistant", "content": "1. psoriasis"}]
    text = processor.apply_chat_template(conversation, tokenize=False)
    batch = processor(images=[random_image(112, 112, 6), random_image(90, 140, 7)], text=[text] * 2,
                      padding=True, return_tensors="pt").to("cuda")
    batch["pixel_values"] = batch["pixel_values"].to(torch.bfloat16)
    loss = model(**batch, labels=batch["input_ids"]).loss
    loss.backward()
    assert torch.isfinite(loss.float())
    grads = [p.grad for p in model.model.visual.blocks[3].mlp.down_proj.parameters()]
    assert all(g is not None and torch.isfinite(g.float()).all() for g in grads)


@pytest.mark.parametrize(
    "arguments, error",
    [(dict(seed=True), TypeError), (dict(seed=1.5), TypeError), (dict(seed=-1), ValueError),
     (dict(seed=2**64), ValueError), (dict(dve=1), TypeError), (dict(num_bases=True), TypeError)],
)
def test_build_refuses_bad_arguments(arguments, error):
    with pytest.raises(error, match=next(iter(arguments))):
        tiny.build(**arguments)


def test_image_processor_alone_is_the_processors(built):
    """The CLI checks images with it before the model is built: the same limits as the processor's."""
    alone, inside = tiny.build_image_processor(), built[1].image_processor
    for key in ("patch_size", "merge_size", "temporal_patch_size", "size"):
        assert getattr(alone, key) == getattr(inside, key), key
    assert alone.get_number_of_image_patches(90, 140, {}) == inside.get_number_of_image_patches(90, 140, {})
