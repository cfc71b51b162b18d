"""Build script: pure Python package; csrc/ native extension is added here when present."""

from setuptools import setup

setup()
