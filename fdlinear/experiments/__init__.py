"""Small, self-contained experiments with FDLinear (run as ``python -m fdlinear.experiments.<name>``)."""
