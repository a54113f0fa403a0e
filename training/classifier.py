"""--task classifier: the noise-aware classifier of classifier guidance (Dhariwal & Nichol 2021,
https://huggingface.co/papers/2105.05233), trained by the training script's machinery (`TrainingRun`: Accelerate, the
seeded data order and random streams, AdamW and its schedule, EMA, checkpoints and exact resume, preemption, the Hub,
the logs) on images noised by the diffusion model's own forward process, so that it can name the class of the x_t
that sampling visits.

Training logs the accuracy in each quarter of the noise schedule (`accuracy_q1`, t in [0, T/4), the least noisy, to
`accuracy_q4`); at the end the accuracy is measured on held-out images, clean and in each quarter
(`evaluation/classifier_accuracy.json`). --output_dir ends as a `DDPMClassifier2DModel` folder with its code, its class
names and a model card.
"""

from __future__ import annotations

import json
import os

import torch
import torch.nn.functional as F
from accelerate.logging import get_logger

from hf_ddpm.data import ImageData, random_flip
from hf_ddpm.hub import write_classifier_card
from hf_ddpm.models.classifier_2d import DDPMClassifier2DModel
from hf_ddpm.models.presets import classifier_config_from
from hf_ddpm.pipelines.pipeline_ddpm_cfg import _copy_source_file
from hf_ddpm.schedulers import DDPMScheduler
from hf_ddpm.training.checkpoints import EVALUATION_DIR, save_folder_atomically, writing
from hf_ddpm.training.flags import CLASSIFIER_NOISE, DEFAULT_ACCURACY_IMAGES, DIFFUSION_ONLY_FLAGS, RunPlan
from hf_ddpm.training.inputs import accuracy_images
from hf_ddpm.training.step import ema_weights, evaluation_mode
from hf_ddpm.training.train import TrainingRun

logger = get_logger(__name__, log_level="INFO")


QUARTERS = 4  # the accuracy is reported per quarter of the timesteps [0, T)


ACCURACY_FILE = "classifier_accuracy.json"  # in --output_dir/evaluation/


def classifier_inputs(
    clean: torch.Tensor, noise_scheduler: DDPMScheduler, generator: torch.Generator, classifier_noise: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """What the classifier sees of a batch of clean images x_0, and at which timesteps.

    "uniform": x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps at t drawn uniformly from [0, T), eq. (4) of
    Ho et al. 2020, by the scheduler that noises the diffusion model's training images (`add_noise`). "none": x_0
    itself at t = 0, the classifier of clean images that the tutorials say cannot guide.
    """
    if classifier_noise not in CLASSIFIER_NOISE:
        raise ValueError(f"--classifier_noise must be one of {CLASSIFIER_NOISE}, got {classifier_noise!r}.")
    batch, device = clean.shape[0], clean.device
    if classifier_noise == "none":
        return clean, torch.zeros(batch, dtype=torch.long, device=device)
    noise = torch.randn(clean.shape, generator=generator).to(device)
    timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (batch,), generator=generator)
    timesteps = timesteps.to(device)
    return noise_scheduler.add_noise(clean, noise, timesteps), timesteps


def quarter_bounds(quarter: int, num_train_timesteps: int) -> tuple[int, int]:
    """The timesteps `range(low, high)` of quarter `quarter` (0 to 3) of [0, T): those t with
    quarter <= 4 t / T < quarter + 1."""
    return -(-quarter * num_train_timesteps // QUARTERS), -(-(quarter + 1) * num_train_timesteps // QUARTERS)


def correct_by_quarter(
    logits: torch.Tensor, labels: torch.Tensor, timesteps: torch.Tensor, num_train_timesteps: int
) -> torch.Tensor:
    """A (2, 4) tensor: in each quarter of the timesteps, how many images the logits name rightly, and how many there
    are."""
    quarter = timesteps.long() * QUARTERS // num_train_timesteps
    right = (logits.argmax(dim=-1) == labels).float()
    counts = torch.zeros(2, QUARTERS, device=logits.device)
    counts[0].index_add_(0, quarter, right)
    counts[1].index_add_(0, quarter, torch.ones_like(right))
    return counts


@torch.no_grad()
def measure_accuracy(
    model: torch.nn.Module, noise_scheduler: DDPMScheduler, data: ImageData, batch_size: int, seed: int
) -> dict:
    """The share of `data`'s images that `model` classifies rightly: clean (x_0 at t = 0), and in each quarter of the
    noise schedule (x_t at a t drawn uniformly from the quarter). Timesteps and noise come from `seed` alone, so two
    classifiers measured with the same seed see the same noisy images.

    Returns:
        `{"accuracy": {"clean": a, "q1": a, ..., "q4": a}, "timesteps": {name: [low, high]}}`, each range of timesteps
        `range(low, high)`; an accuracy is `None` where its quarter holds no timestep (T < 4).
    """
    num_train_timesteps = noise_scheduler.config.num_train_timesteps
    ranges = {"clean": (0, 1), **{f"q{q + 1}": quarter_bounds(q, num_train_timesteps) for q in range(QUARTERS)}}
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    accuracy = {}
    for name, (low, high) in ranges.items():
        if high <= low:
            accuracy[name] = None
            continue
        right = 0
        for start in range(0, len(data), batch_size):
            clean, labels = data.images[start : start + batch_size], data.labels[start : start + batch_size]
            timesteps = torch.randint(low, high, (clean.shape[0],), generator=generator)
            if name == "clean":
                noisy = clean
            else:
                noisy = noise_scheduler.add_noise(clean, torch.randn(clean.shape, generator=generator), timesteps)
            logits = model(noisy.to(device), timesteps.to(device)).logits
            right += int((logits.argmax(dim=-1).cpu() == labels).sum())
        accuracy[name] = right / len(data)
    return {"accuracy": accuracy, "timesteps": {name: list(bounds) for name, bounds in ranges.items()}}


def save_classifier_folder(model: DDPMClassifier2DModel, folder: str, id2label: dict[int, str]) -> None:
    """`model.save_pretrained(folder)` (config and safetensors), with the model's code file beside its config and, in
    the config, `auto_map` (so that diffusers' `AutoModel.from_pretrained(folder, trust_remote_code=True)` loads it
    where hf-ddpm is not installed) and `id2label` (so that the class names travel with the weights)."""
    model.save_pretrained(folder)
    code_file = _copy_source_file(type(model), folder)
    config_path = os.path.join(folder, model.config_name)
    with open(config_path, encoding="utf-8") as config_file:
        config = json.load(config_file)
    config["auto_map"] = {"AutoModel": f"{code_file}.{type(model).__name__}"}
    config["id2label"] = {str(class_id): name for class_id, name in sorted(id2label.items())}
    with open(config_path, "w", encoding="utf-8") as config_file:
        config_file.write(json.dumps(config, indent=2, sort_keys=True) + "\n")


def write_json_atomically(path: str, content: dict) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".partial", "w", encoding="utf-8") as file:
        json.dump(content, file, indent=2)
    os.replace(path + ".partial", path)


class ClassifierTrainingRun(TrainingRun):
    """A `TrainingRun` of the noise-aware classifier (`DDPMClassifier2DModel`): cross-entropy on the noised images
    of `classifier_inputs`, the accuracy per noise quarter logged at every step, no previews, the classifier saved
    into --output_dir at every checkpoint and at the end, and its accuracy on held-out images measured at the end."""

    model_name = "classifier"

    def _build_model(self, args, data: ImageData, plan: RunPlan) -> torch.nn.Module:
        config = classifier_config_from(
            plan.model_keys,
            resolution=args.resolution,
            channels=data.images.shape[1],
            num_classes=data.num_classes,
            num_train_timesteps=args.num_train_timesteps,
        )
        self.counts = torch.zeros(2, QUARTERS)  # `correct_by_quarter` of the optimizer step under way
        return DDPMClassifier2DModel(**config)

    def _build_evaluation(self, args, plan: RunPlan) -> None:
        """Reads the held-out images of the final accuracy now, so that a split that cannot be read fails before
        training."""
        super()._build_evaluation(args, plan)
        held_out = accuracy_images(args, self.data, args.eval_num_samples or DEFAULT_ACCURACY_IMAGES)
        if held_out.id2label != self.data.id2label:
            raise ValueError(
                f"The classifier's accuracy cannot be measured on {held_out.source}: its classes "
                f"{held_out.id2label} are not those of the training images {self.data.id2label}."
            )
        self.held_out = held_out

    def _model_description(self) -> str:
        return f"noise-aware classifier (--classifier_noise {self.args.classifier_noise})"

    def _loss(self, batch: list[torch.Tensor], generator: torch.Generator) -> torch.Tensor:
        clean, labels = batch
        if self.args.random_flip:
            clean = random_flip(clean, generator=generator)
        noisy, timesteps = classifier_inputs(clean, self.noise_scheduler, generator, self.args.classifier_noise)
        logits = self.training_model(noisy, timesteps).logits.float()
        counts = correct_by_quarter(logits.detach(), labels, timesteps, self.args.num_train_timesteps)
        self.counts = self.counts.to(counts.device) + counts
        return F.cross_entropy(logits, labels)

    def _step_logs(self) -> dict[str, float]:
        """`accuracy_q1` to `accuracy_q4`: the accuracy of the step's images (every process's) whose timestep falls
        in each quarter of [0, T); a quarter that none fell in is left out."""
        counts = self.accelerator.reduce(self.counts, reduction="sum").cpu()
        self.counts = torch.zeros_like(self.counts)
        return {
            f"accuracy_q{quarter + 1}": float(counts[0, quarter] / counts[1, quarter])
            for quarter in range(QUARTERS)
            if counts[1, quarter] > 0
        }

    def _progress_postfix(self, logs: dict[str, float]) -> dict[str, str]:
        accuracies = {
            key.replace("accuracy", "acc"): f"{value:.2f}" for key, value in logs.items() if "accuracy" in key
        }
        return {**super()._progress_postfix(logs), **accuracies}

    def _preview(self, step: int) -> None:
        """None: a classifier has no pipeline to sample."""

    def _save_model(self) -> None:
        self.save_classifier()

    def save_classifier(self, accuracy: dict | None = None) -> None:
        """Writes the classifier (EMA weights) into --output_dir, all or nothing: config with the class names,
        weights, code file, and a model card (with `accuracy`, the final report, when given)."""
        args = self.args
        model = self.accelerator.unwrap_model(self.model)

        def write(folder: str) -> None:
            save_classifier_folder(model, folder, self.data.id2label)
            write_classifier_card(
                folder,
                model_id=self.pusher.repo_id if self.pusher is not None else args.output_dir,
                dataset_name=args.dataset_name or args.train_data_dir,
                training_args=card_settings(args),
                id2label=self.data.id2label,
                accuracy=accuracy,
            )

        with ema_weights(self.model, self.ema), writing("the classifier", args.output_dir):
            save_folder_atomically(write, args.output_dir, "classifier")

    def _save_final(self) -> None:
        """The accuracy of the classifier (EMA weights) on the held-out images, measured on the main process, in
        evaluation/classifier_accuracy.json, the logs and the model card; the classifier."""
        if not self.accelerator.is_main_process:
            return
        args = self.args
        with ema_weights(self.model, self.ema), evaluation_mode(self.model):
            model = self.accelerator.unwrap_model(self.model)
            measured = measure_accuracy(model, self.noise_scheduler, self.held_out, args.eval_batch_size, args.seed)
        report = {
            "step": self.progress.global_step,
            "num_images": len(self.held_out),
            "source": self.held_out.source,
            "classifier_noise": args.classifier_noise,
            "beta_schedule": args.beta_schedule,
            "num_train_timesteps": args.num_train_timesteps,
            "seed": args.seed,
            **measured,
        }
        with writing("the accuracy", args.output_dir):
            write_json_atomically(os.path.join(args.output_dir, EVALUATION_DIR, ACCURACY_FILE), report)
        accuracy = {name: value for name, value in measured["accuracy"].items() if value is not None}
        self.accelerator.log({f"final/accuracy_{name}": value for name, value in accuracy.items()}, step=report["step"])
        logger.info(
            f"Accuracy on {report['num_images']} images of {report['source']}: "
            + ", ".join(f"{name} {value:.3f}" for name, value in accuracy.items())
        )
        self.save_classifier(report)
        logger.info(f"Saved the classifier to {args.output_dir}")


def card_settings(args) -> dict:
    """The flags that the classifier's training used, for its model card: neither the Hub token nor the diffusion
    model's flags, which it refused."""
    return {
        key: value
        for key, value in vars(args).items()
        if key != "hub_token" and f"--{key}" not in DIFFUSION_ONLY_FLAGS and key != "class_conditional"
    }
