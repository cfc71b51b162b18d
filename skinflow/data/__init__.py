"""skinflow data: the synthetic dermatology set, Fitzpatrick17k with SkinCon captions, the JSONL format, exports."""
