"""hf-ddpm: pixel-space diffusion (DDPM, DDIM, classifier-free guidance) for diffusers."""

__version__ = "0.1.0"
