#!/usr/bin/env python
"""Train a (class-conditional) pixel-space diffusion model with Accelerate.

    accelerate launch training/train.py --dataset_name fashion_mnist --resolution 28 --output_dir ddpm-fashion-mnist
    accelerate launch -m hf_ddpm.training.train --dataset_name digits --resolution 16 --model_config digits

One CPU, one GPU or many processes (`accelerate launch --multi_gpu --num_processes N ...`; on a machine without GPUs
the processes train on CPUs over gloo). The flags follow diffusers'
examples/unconditional_image_generation/train_unconditional.py where it has one. The run ends with `--output_dir`
holding a pipeline that `DDPMCFGPipeline.from_pretrained` and `DiffusionPipeline.from_pretrained(...,
trust_remote_code=True)` load, with a model card; on the way it writes checkpoints (`checkpoint-N`), sample previews
(`samples/`) and tensorboard logs, and with --eval_steps evaluations (`evaluation/`, `checkpoint-best`).

With --task classifier it trains instead the noise-aware classifier that guides such a model (training/classifier.py),
with the same machinery: `--output_dir` ends as a `DDPMClassifier2DModel` folder with its accuracy by noise level.

The script reads top to bottom: parse the flags and check them, load the data, build the model, train, save.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import set_seed
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from hf_ddpm.data import ImageData
from hf_ddpm.hub import HubPusher, HubPushError, pipeline_ignore_patterns, write_model_card
from hf_ddpm.models.presets import unet_config_from
from hf_ddpm.models.unet_2d import DDPMUNet2DModel
from hf_ddpm.pipelines import DDPMCFGPipeline
from hf_ddpm.previews import log_preview
from hf_ddpm.schedulers import DDPMScheduler
from hf_ddpm.stopping import USAGE_EXIT_STATUS, Preempted, PreemptionSignals, StopRequested, TrainingStopped
from hf_ddpm.training.checkpoints import (
    BEST_CHECKPOINT,
    EVALUATION_DIR,
    TrainingProgress,
    as_json,
    check_same_batching,
    check_same_unet,
    prepare_output_dir,
    save_checkpoint,
    save_pipeline_atomically,
    save_state_atomically,
    writing,
)
from hf_ddpm.training.evaluation_setup import best_so_far, make_evaluator, training_evaluation
from hf_ddpm.training.flags import RunPlan, evaluation_settings, parse_args, sampling_scheduler
from hf_ddpm.training.inputs import load_training_data, training_dataloader
from hf_ddpm.training.launch import end_processes, log_to_file, loggable, make_accelerator, stop_logging_to_file
from hf_ddpm.training.samples import write_samples
from hf_ddpm.training.step import (
    MICRO_BATCH,
    apply_optimizer_flags,
    check_finite,
    ema_weights,
    evaluation_mode,
    seeded_generator,
    training_loss,
)
from hf_ddpm.training_eval import log_line, scalars

logger = get_logger(__name__, log_level="INFO")


UPLOAD_GRACE_S = 60.0  # how long a stopping run waits for its pending uploads


def main(argv: list[str] | None = None) -> str:
    """Runs the training that `argv` (the command-line flags) describes; returns the output folder.

    Raises:
        `ValueError`: a flag, the data or the output folder that cannot be used, before any training step.
        `TrainingStopped`: the run ended early (a signal, a non-finite loss, a failed write or upload), having said
            what happened and how to go on; `Preempted` when a signal stopped it after saving a checkpoint.
    """
    args = parse_args(argv)
    plan = RunPlan.check(args)
    accelerator = make_accelerator(args, plan.resume_path)
    data = load_training_data(args)
    if args.task == "classifier":
        # Imported here: the classifier's run builds on TrainingRun, below.
        from hf_ddpm.training.classifier import ClassifierTrainingRun

        run = ClassifierTrainingRun(args, accelerator, data, plan)
    else:
        run = TrainingRun(args, accelerator, data, plan)
    try:
        with PreemptionSignals() as signals:
            run.train(signals)
            run.finish()
    finally:
        run.close()
    return args.output_dir


class TrainingRun:
    """One training run, set up and checked: the model, its noise schedule, optimizer, learning-rate schedule and
    EMA; the data loader in an order fixed by (seed, epoch); the evaluation; the output folder and the Hub. `train`
    runs the optimizer steps (and what each of them may trigger: logs, previews, evaluations, checkpoints), `finish`
    saves the pipeline. A subclass trains another model with the same machinery (`ClassifierTrainingRun`) through
    `_build_model`, `_loss`, `_step_logs`, `_preview`, `_save_model` and `_save_final`."""

    model_name = "UNet"  # in the messages

    def __init__(self, args: argparse.Namespace, accelerator: Accelerator, data: ImageData, plan: RunPlan):
        self.args, self.accelerator, self.data, self.plan = args, accelerator, data, plan
        self.conditional = data.labels is not None if args.class_conditional is None else args.class_conditional
        self.eval_metrics, self.eval_scale, self.final_scales = evaluation_settings(args, self.conditional)
        self._build_training(args, accelerator, data, plan)
        self._build_evaluation(args, plan)
        self._prepare_outputs(args, accelerator, plan)

    # ----- set-up -----

    def _build_training(self, args, accelerator: Accelerator, data: ImageData, plan: RunPlan) -> None:
        dataloader = training_dataloader(args, data, self.conditional, accelerator.num_processes)
        set_seed(args.seed)
        model = self._build_model(args, data, plan)
        full_config = as_json({key: value for key, value in model.config.items() if not key.startswith("_")})
        if plan.resume_path is not None:
            check_same_unet(plan.resume_path, full_config, self.model_name)
        self.noise_scheduler = DDPMScheduler(
            num_train_timesteps=args.num_train_timesteps,
            beta_schedule=args.beta_schedule,
            prediction_type=args.prediction_type,
        )
        self.ema = None
        if args.use_ema:
            self.ema = EMAModel(
                model.parameters(),
                decay=args.ema_max_decay,
                use_ema_warmup=True,
                inv_gamma=args.ema_inv_gamma,
                power=args.ema_power,
                foreach=True,
            )
        # The fused kernel updates every tensor in one pass, where PyTorch otherwise loops over the tensors one by one.
        optimizer = torch.optim.AdamW(
            model.parameters(),
            lr=args.learning_rate,
            betas=(args.adam_beta1, args.adam_beta2),
            weight_decay=args.adam_weight_decay,
            eps=args.adam_epsilon,
            fused=accelerator.device.type in ("cpu", "cuda"),
        )
        # Batches per process (Accelerate shards whole batches across processes); the last accumulation of an epoch
        # may be short, and still makes an optimizer step.
        self.batches_per_epoch = len(dataloader) // accelerator.num_processes
        self.updates_per_epoch = math.ceil(self.batches_per_epoch / args.gradient_accumulation_steps)
        batching = {
            "processes": accelerator.num_processes,
            "batch_size": args.train_batch_size,
            "accumulation": args.gradient_accumulation_steps,
            "images": len(data),
        }
        self.max_train_steps = args.max_train_steps or args.num_epochs * self.updates_per_epoch
        if plan.resume_path is not None:
            check_same_batching(plan.resume_path, batching, self.max_train_steps)
        self.num_epochs = math.ceil(self.max_train_steps / self.updates_per_epoch)
        # The prepared scheduler steps once per process at every optimizer step (and not at accumulation steps), so
        # the schedule is laid out in optimizer steps x processes.
        lr_scheduler = get_scheduler(
            args.lr_scheduler,
            optimizer=optimizer,
            num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
            num_training_steps=self.max_train_steps * accelerator.num_processes,
        )
        self.model, self.optimizer, self.dataloader, self.lr_scheduler = accelerator.prepare(
            model, optimizer, dataloader, lr_scheduler
        )
        # Only the training forward runs compiled; the compiled wrapper shares the eager model's parameters, and
        # everything else (checkpoints, EMA, previews, the saved pipeline) sees the eager model and its own names.
        self.training_model = torch.compile(self.model) if args.torch_compile else self.model
        self.progress = TrainingProgress(args.seed, args.use_ema, full_config, batching, self.max_train_steps)
        accelerator.register_for_checkpointing(self.progress)
        if self.ema is not None:
            self.ema.to(accelerator.device)
            accelerator.register_for_checkpointing(self.ema)

    def _build_model(self, args, data: ImageData, plan: RunPlan) -> torch.nn.Module:
        """The network to train (freshly initialised, after `set_seed`): --model_config completed from the data."""
        unet_config = unet_config_from(
            plan.model_keys,
            resolution=args.resolution,
            channels=data.images.shape[1],
            num_classes=data.num_classes if self.conditional else None,
        )
        model = DDPMUNet2DModel(**unet_config)
        self.null_class_id = model.null_class_id
        return model

    def _build_evaluation(self, args, plan: RunPlan) -> None:
        """Set up now (real features, floors, judge), so that a metric that cannot be computed fails here."""
        self.evaluation = training_evaluation(
            args, self.accelerator, lambda: make_evaluator(args, self.data, self.pipeline, self.eval_metrics)
        )
        self.best = best_so_far(args, plan.resume_path)

    def _prepare_outputs(self, args, accelerator: Accelerator, plan: RunPlan) -> None:
        """Every check has passed: --output_dir made ready, the trackers, the Hub, and the log file (every log line,
        the libraries' included, also goes to --logging_dir/train.log on the main process, until `close`)."""
        replaced = plan.previous_run if args.overwrite_output_dir else []
        prepare_output_dir(accelerator, args.output_dir, replaced, plan.resume_path)
        accelerator.init_trackers("train_ddpm", config=loggable(vars(args)))
        self.pusher = None
        if args.push_to_hub and accelerator.is_main_process:
            repo_id = args.hub_model_id or os.path.basename(os.path.abspath(args.output_dir))
            self.pusher = HubPusher(
                repo_id,
                plan.hub_token,
                private=args.hub_private_repo,
                ignore_patterns=pipeline_ignore_patterns(args.logging_dir),
            )
        folder = os.path.join(args.output_dir, args.logging_dir)
        self.log_file_handler = log_to_file(folder) if accelerator.is_main_process else None

    def close(self) -> None:
        """Stops writing the log file (a later run in the same process writes its own)."""
        stop_logging_to_file(getattr(self, "log_file_handler", None))
        self.log_file_handler = None

    # ----- the model as a pipeline -----

    def pipeline(self) -> DDPMCFGPipeline:
        """The model as a sampling pipeline, with --scheduler (`sampling_scheduler`)."""
        pipe = DDPMCFGPipeline(
            unet=self.accelerator.unwrap_model(self.model),
            scheduler=sampling_scheduler(self.args),
            id2label=self.data.id2label if self.conditional else None,
            null_class_id=self.null_class_id,
        )
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def save_pipeline(self, sample_grid_path: str | None = None, evaluation_dir: str | None = None) -> None:
        """Writes the pipeline folder (EMA weights) into --output_dir, with its model card."""
        args = self.args
        with ema_weights(self.model, self.ema), writing("the pipeline", args.output_dir):
            save_pipeline_atomically(self.pipeline(), args.output_dir)
            write_model_card(
                args.output_dir,
                repo_id=self.pusher.repo_id if self.pusher is not None else None,
                dataset_name=args.dataset_name or args.train_data_dir,
                training_args={key: value for key, value in vars(args).items() if key != "hub_token"},
                sample_grid_path=sample_grid_path,
                id2label=self.data.id2label if self.conditional else None,
                evaluation_dir=evaluation_dir,
            )

    # ----- training -----

    def train(self, signals: PreemptionSignals) -> None:
        """The optimizer steps from where the run stands (step 0, or the resumed checkpoint's) to the last one."""
        args, accelerator = self.args, self.accelerator
        if self.plan.resume_path is not None:
            accelerator.load_state(self.plan.resume_path)
            # This run's, which may go on longer than the saved one.
            self.progress.max_train_steps = self.max_train_steps
            if self.ema is not None:  # Accelerate loads it onto the CPU, and EMAModel keeps what it is given
                self.ema.to(accelerator.device)
            logger.info(f"Resumed from {self.plan.resume_path} at step {self.progress.global_step}")
            for change in apply_optimizer_flags(self.optimizer, self.lr_scheduler.scheduler, args):
                logger.info(f"Resumed with {change}")
        self.signals = signals
        step = self.progress.global_step
        first_epoch = step // self.updates_per_epoch
        batches_done_in_epoch = (step % self.updates_per_epoch) * args.gradient_accumulation_steps
        logger.info(
            f"{len(self.data)} images from {self.data.source}; {self._model_description()} of "
            f"{sum(p.numel() for p in self.model.parameters()) / 1e6:.2f}M parameters; {accelerator.num_processes} "
            f"process(es) x batch {args.train_batch_size} x {args.gradient_accumulation_steps} accumulation; "
            f"{self.max_train_steps} optimizer steps ({self.num_epochs} epochs); {torch.get_num_threads()} torch threads"
        )
        if step >= self.max_train_steps:
            logger.info(f"{self.plan.resume_path} is at step {step}: this run's {self.max_train_steps} steps are done.")
            return
        progress_bar = tqdm(
            total=self.max_train_steps, initial=step, unit="step", disable=not accelerator.is_local_main_process
        )
        self.model.train()
        for epoch in range(first_epoch, self.num_epochs):
            skip = batches_done_in_epoch if epoch == first_epoch else 0
            for logs in self._epoch(epoch, skip):
                progress_bar.set_postfix(self._progress_postfix(logs))
                progress_bar.update(1)
                self._after_step(self.progress.global_step)
                if self.progress.global_step >= self.max_train_steps:
                    break
        progress_bar.close()

    def _epoch(self, epoch: int, skip: int):
        """The optimizer steps of one epoch, from its batch `skip` on; yields each step's logs once it is done."""
        args, accelerator = self.args, self.accelerator
        self.dataloader.set_epoch(epoch)
        batches = accelerator.skip_first_batches(self.dataloader, skip) if skip else self.dataloader
        losses = []
        for batch_index, batch in enumerate(batches, start=skip):
            generator = seeded_generator(
                args.seed, MICRO_BATCH, accelerator.process_index, epoch * self.batches_per_epoch + batch_index
            )
            with accelerator.accumulate(self.model):
                loss = self._loss(batch, generator)
                accelerator.backward(loss)
                losses.append(loss.detach())
                if accelerator.sync_gradients:
                    grad_norm = accelerator.clip_grad_norm_(self.model.parameters(), args.max_grad_norm)
                    # Before the optimizer step: weights that took a non-finite step are never saved.
                    check_finite(
                        losses,
                        grad_norm,
                        self.progress.global_step + 1,
                        args,
                        grad_scaler=accelerator.scaler is not None,
                    )
                self.optimizer.step()
                self.lr_scheduler.step()
                self.optimizer.zero_grad()
            if not accelerator.sync_gradients:
                continue
            self.progress.global_step += 1
            if self.ema is not None:
                self.ema.step(self.model.parameters())
            mean_loss = accelerator.reduce(torch.stack(losses).mean(), reduction="mean").item()
            losses = []
            logs = {"loss": mean_loss, "lr": self.lr_scheduler.get_last_lr()[0], "grad_norm": grad_norm.item()}
            logs.update(self._step_logs())
            if self.ema is not None:
                logs["ema_decay"] = self.ema.cur_decay_value
            accelerator.log(logs, step=self.progress.global_step)
            yield logs

    def _model_description(self) -> str:
        return f"{'class-conditional' if self.conditional else 'unconditional'} UNet"

    def _loss(self, batch: list[torch.Tensor], generator: torch.Generator) -> torch.Tensor:
        """The loss of one micro-batch, every random draw from `generator`."""
        return training_loss(self.training_model, self.noise_scheduler, batch, generator, self.args, self.null_class_id)

    def _step_logs(self) -> dict[str, float]:
        """What an optimizer step logs besides the loss, learning rate and gradient norm (every process calls it)."""
        return {}

    def _progress_postfix(self, logs: dict[str, float]) -> dict[str, str]:
        return {"loss": f"{logs['loss']:.4f}", "lr": f"{logs['lr']:.2e}"}

    def _after_step(self, step: int) -> None:
        """What optimizer step `step` triggers, in this order: a preview, an evaluation, a checkpoint; then the stop
        check, which every process makes together."""
        args = self.args
        if step % args.save_images_steps == 0 and self.accelerator.is_main_process:
            self._preview(step)
        # Every process samples its share; the last step's evaluation is the final one, in `finish`.
        if self.evaluation is not None and step % args.eval_steps == 0 and step < self.max_train_steps:
            self._evaluate(step)
        if step % args.checkpointing_steps == 0:
            self._checkpoint(step)
        if self._stop_requested():
            self._stop(step)

    def _preview(self, step: int) -> None:
        def stop_if_signalled(pipe, index, timestep, callback_kwargs):
            self.signals.raise_if_received()
            return callback_kwargs

        samples_dir, name = os.path.join(self.args.output_dir, "samples"), f"step-{step:06d}"
        try:
            preview = write_samples(
                self.pipeline, self.model, self.ema, self.args, samples_dir, name, "a preview", stop_if_signalled
            )
        except StopRequested:  # the checkpoint matters, not the preview: the stop check comes right after
            return
        if self.args.report_to == "tensorboard":
            log_preview(self.accelerator.get_tracker("tensorboard", unwrap=True), preview, step)

    def _evaluate(self, step: int) -> None:
        try:
            with ema_weights(self.model, self.ema), evaluation_mode(self.model):
                row = self.evaluation.measure(self.pipeline(), self.eval_scale, stop=self._signal_received)
        except StopRequested:
            return
        self.record_evaluation(row, step)

    def record_evaluation(self, row: dict, step: int) -> None:
        """Logs an evaluation at --guidance_scale; keeps its state as checkpoint-best when it is the best so far."""
        self.accelerator.log(scalars(row, self.eval_metrics), step=step)
        logger.info(f"Evaluation at step {step} ({row['num_samples']} samples): {log_line(row, self.eval_metrics)}")
        best = self.best
        if best is None or not best.improved_by(row[best.metric]):
            return
        best.value, best.step = row[best.metric], step

        def add_pipeline_and_value(checkpoint: str) -> None:
            with ema_weights(self.model, self.ema):
                self.pipeline().save_pretrained(os.path.join(checkpoint, "pipeline"))
            best.write(checkpoint)

        save_state_atomically(
            self.accelerator, os.path.join(self.args.output_dir, BEST_CHECKPOINT), add_pipeline_and_value
        )

    def _checkpoint(self, step: int) -> None:
        save_checkpoint(self.accelerator, self.args.output_dir, step, self.args.checkpoints_total_limit)
        if self.accelerator.is_main_process:
            self._save_model()
            if self.pusher is not None:
                self.pusher.push_async(self.args.output_dir, f"Step {step}")

    def _save_model(self) -> None:
        """What a checkpoint writes into --output_dir besides the training state (main process)."""
        self.save_pipeline()

    def _signal_received(self) -> bool:
        return self.signals.received is not None

    def _stop_requested(self) -> bool:
        """Whether any process received a preemption signal; every process asks at the same step, and all agree."""
        if self._signal_received():
            self.accelerator.set_trigger()
        return self.accelerator.check_trigger()

    def _stop(self, step: int) -> None:
        """Saves a checkpoint of `step` (unless it was just saved), gives pending uploads a bounded time, and raises
        `Preempted` saying how to resume."""
        path = os.path.join(self.args.output_dir, f"checkpoint-{step}")
        if step % self.args.checkpointing_steps != 0:
            self._checkpoint(step)
        if self.pusher is not None:
            try:
                self.pusher.wait(timeout=UPLOAD_GRACE_S)
            except HubPushError as error:  # the checkpoint is what matters now; the upload can follow later
                logger.warning(str(error))
        self._end_processes()
        raise Preempted(
            f"Stopped by {self.signals.received or 'a signal to another process'} after step {step} of "
            f"{self.max_train_steps}: the training state is saved in {path}. Resume with the same flags and "
            "--resume_from_checkpoint latest."
        )

    # ----- the end -----

    def finish(self) -> None:
        """The run's final outputs (`_save_final`), then the last push."""
        self.accelerator.wait_for_everyone()
        self._save_final()
        push_error = None
        if self.pusher is not None:
            try:
                self.pusher.push_blocking(self.args.output_dir, "End of training")
            except HubPushError as error:  # raised once the run has ended: everything is saved locally
                push_error = error
        self._end_processes()
        if push_error is not None:
            raise push_error

    def _save_final(self) -> None:
        """The final evaluation (all processes) at every --eval_guidance_scales; the pipeline (EMA weights), a final
        sample grid and the model card."""
        args, accelerator = self.args, self.accelerator
        evaluation_dir = None
        if self.evaluation is not None:
            evaluation_dir = os.path.join(args.output_dir, EVALUATION_DIR)
            with ema_weights(self.model, self.ema), evaluation_mode(self.model):
                info = {"step": self.progress.global_step, "seed": args.seed}
                rows = self.evaluation.sweep(self.pipeline(), self.final_scales, evaluation_dir, info=info)
            at_scale = next(row for row in rows if row["guidance_scale"] == self.eval_scale)
            self.record_evaluation(at_scale, self.progress.global_step)
        if accelerator.is_main_process:
            # Beside the pipeline, not in samples/, so that it travels to the Hub with the model card.
            final = write_samples(self.pipeline, self.model, self.ema, args, args.output_dir, "samples", "the samples")
            self.save_pipeline(sample_grid_path=final.grid_path, evaluation_dir=evaluation_dir)
            logger.info(f"Saved the pipeline to {args.output_dir}")

    def _end_processes(self) -> None:
        """Ends the trackers and the process group (`end_processes`), the run's DDP wrapper released first."""
        self.model = self.training_model = self.accelerator.unwrap_model(self.model)
        end_processes(self.accelerator)


def command_line(argv: list[str] | None = None) -> int:
    """`main` as a command: a usage or data error, or a run that stopped early, ends with its message on stderr and
    an exit status (2 for bad flags or data, `PREEMPTED_EXIT_STATUS` when preempted, 1 otherwise); tracebacks are
    for bugs only."""
    try:
        main(argv)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return USAGE_EXIT_STATUS
    except TrainingStopped as stopped:
        print(f"stopped: {stopped}", file=sys.stderr)
        return stopped.exit_status
    except HubPushError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(command_line())
