"""Accelerate training scripts."""
