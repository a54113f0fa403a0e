"""What several test files share: the scheduler test grid and its stand-in model, a tiny training run, and a way to
hide hf_ddpm from a subprocess."""

import diffusers
import torch

SCHEDULES = ["linear", "scaled_linear", "cosine", "sigmoid"]
PREDICTION_TYPES = ["epsilon", "sample", "v_prediction"]
SPACINGS = ["linspace", "leading", "trailing"]
# (num_train_timesteps, num_inference_steps)
STEP_COUNTS = [(1000, 50), (1000, 7), (1000, 1), (200, 13), (200, 3)]
TOLERANCE = dict(atol=2e-5, rtol=0)

DATA_MEAN = torch.linspace(-0.8, 0.8, 16).reshape(1, 1, 4, 4)


def gaussian_denoiser(alphas_cumprod, prediction_type, learned_variance=False):
    """A stand-in for a trained network: the ideal denoiser of data x_0 ~ N(DATA_MEAN, 0.25 I) plus a small non-linear
    term, answering in the requested parameterisation. Smooth and well conditioned like a real model, so samplers that
    agree step by step also agree over a whole loop."""

    def model(x, t):
        alpha_bar = alphas_cumprod[int(t)]
        a, s = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
        x0 = DATA_MEAN + a * 0.25 / (0.25 * alpha_bar + 1 - alpha_bar) * (x - a * DATA_MEAN) + 0.05 * torch.tanh(x)
        eps = (x - a * x0) / s
        output = {"epsilon": eps, "sample": x0, "v_prediction": a * eps - s * x0}[prediction_type]
        if learned_variance:  # extra channels in (0.1, 0.9): a variance for "learned", v for "learned_range"
            output = torch.cat([output, 0.5 + 0.4 * torch.tanh(x)], dim=1)
        return output

    return model


def public_config(config) -> dict:
    """A config without its private keys ("_class_name", "_diffusers_version", ...): what two classes can share."""
    return {key: value for key, value in config.items() if not key.startswith("_")}


def tiny_diffusers_unet() -> diffusers.UNet2DModel:
    """diffusers' own UNet at 8x8x1, small enough to run a whole diffusers pipeline in a test."""
    return diffusers.UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
    )


# Written as sitecustomize.py into a folder on a subprocess's PYTHONPATH: `import hf_ddpm` then fails there, as in
# an environment where only diffusers is installed.
BLOCK_HF_DDPM = """
import sys

class BlockHfDdpm:
    def find_spec(self, name, path=None, target=None):
        if name == "hf_ddpm" or name.startswith("hf_ddpm."):
            raise ImportError(f"{name} is not installed here")
        return None

sys.meta_path.insert(0, BlockHfDdpm())
"""


def tiny_flags(output_dir, *extra: str) -> list[str]:
    """Training flags for a few-second run: 64 digits at 8x8, the tiny UNet, no previews or checkpoints."""
    return [
        "--dataset_name", "digits", "--max_train_samples", "64", "--resolution", "8", "--model_config", "tiny",
        "--train_batch_size", "8", "--output_dir", str(output_dir), "--num_inference_steps", "2",
        "--eval_batch_size", "10", "--save_images_steps", "1000", "--checkpointing_steps", "1000",
        "--report_to", "none", "--learning_rate", "1e-3", "--lr_warmup_steps", "0", *extra,
    ]  # fmt: skip
