"""The diffusion pipelines, one self-contained file each."""
