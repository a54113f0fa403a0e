"""Noise schedulers, one self-contained file each."""
