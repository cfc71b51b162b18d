"""skinflow: the Dynamic Vision Encoder in Qwen2.5-VL for open dermatological diagnosis."""
