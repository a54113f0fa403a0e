"""What a training step of the noise-aware classifier costs beside the UNet's: forward and backward of a batch at
28x28x1 (Fashion-MNIST) for each classifier preset and the UNet's "small", in fp32 and under bf16 autocast. The models
alternate round by round after a warm-up; the table gives the median seconds per step and the ratio to the UNet.

    python benchmarks/bench_classifier_step.py
    python benchmarks/bench_classifier_step.py --threads 2 --rounds 20 --batch-size 64

Timings need a quiet machine: run nothing else beside it.
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from bench_evaluation import cpu_description

from hf_ddpm.models.classifier_2d import DDPMClassifier2DModel
from hf_ddpm.models.presets import CLASSIFIER_PRESETS, UNET_PRESETS, classifier_config_from, unet_config_from
from hf_ddpm.models.unet_2d import DDPMUNet2DModel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=15, help="Timed rounds (after one warm-up round).")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    models = {"unet small": DDPMUNet2DModel(**unet_config_from(UNET_PRESETS["small"], **DATA, num_classes=10))}
    for name, keys in CLASSIFIER_PRESETS.items():
        config = classifier_config_from(keys, **DATA, num_classes=10, num_train_timesteps=1000)
        models[f"classifier {name}"] = DDPMClassifier2DModel(**config)
    batch = (torch.randn(args.batch_size, 1, 28, 28), torch.randint(0, 1000, (args.batch_size,)))
    labels = torch.randint(0, 10, (args.batch_size,))
    print(f"{cpu_description()}; {args.threads} torch thread(s); batch {args.batch_size} at 28x28x1")
    for bf16 in (False, True):
        seconds = {name: [] for name in models}
        for round_index in range(args.rounds + 1):
            for name, model in models.items():
                start = time.perf_counter()
                train_step(model, batch, labels, bf16)
                if round_index:  # the first round warms up
                    seconds[name].append(time.perf_counter() - start)
        unet = statistics.median(seconds["unet small"])
        for name, times in seconds.items():
            parameters = sum(p.numel() for p in models[name].parameters()) / 1e6
            median = statistics.median(times)
            print(
                f"{'bf16' if bf16 else 'fp32'}  {name:18s} {parameters:5.2f}M parameters  {median:6.3f} s/step  "
                f"{median / unet:.2f}x the UNet's"
            )


DATA = {"resolution": 28, "channels": 1}


def train_step(model, batch, labels, bf16: bool) -> None:
    """Forward and backward of one batch, with the loss of the model's training (MSE for the UNet, cross-entropy for
    the classifier)."""
    images, timesteps = batch
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        if isinstance(model, DDPMClassifier2DModel):
            loss = F.cross_entropy(model(images, timesteps).logits.float(), labels)
        else:
            loss = F.mse_loss(model(images, timesteps).sample.float(), images)
    loss.backward()
    model.zero_grad(set_to_none=True)


if __name__ == "__main__":
    main()
