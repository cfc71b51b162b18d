"""Experiments run on the embedded default (learnability probe)."""
