"""Tests of skinflow.train."""
