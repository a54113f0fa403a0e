"""Noise-prediction networks."""
