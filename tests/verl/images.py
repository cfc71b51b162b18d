"""Prompt inputs of the tiny processor for the verl tests."""

from PIL import Image


def images(count: int) -> list[Image.Image]:
    """``count`` distinct 112-px RGB images."""
    return [Image.new("RGB", (112, 112), (40 + 50 * i, 180 - 30 * i, 90 + 20 * i)) for i in range(count)]


def prompt_inputs(processor, count: int = 1, text: str = "Describe the lesion."):
    """One chat prompt holding ``count`` images, through the processor (``pixel_values``, ``image_grid_thw``, ...)."""
    content = [{"type": "image"} for _ in range(count)] + [{"type": "text", "text": text}]
    prompt = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                           tokenize=False)
    return processor(text=[prompt], images=images(count), return_tensors="pt")
