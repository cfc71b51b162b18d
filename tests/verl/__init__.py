"""Tests of the verl integration (skinflow.verl): run by ``make test-verl`` in build/venv-verl (verl 0.9.x)."""
