"""How a run starts on its machine and how it ends there: the Accelerator (one CPU, one GPU, many processes), torch's
threads on a CPU, the logs (the console shows the run's own lines and every warning; --logging_dir/train.log keeps
everything; the flags go to the trackers), and the process group's end."""

from __future__ import annotations

import argparse
import logging
import os

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import ProjectConfiguration

from hf_ddpm.cpu import choose_torch_threads, cpu_bf16_support, keep_freed_memory
from hf_ddpm.training.checkpoints import (
    check_checkpoint_matches,
)

logger = get_logger(__name__, log_level="INFO")


LOG_FORMAT = "%(asctime)s - %(levelname)s - %(name)s - %(message)s"
LOG_FILE = "train.log"  # in --logging_dir: every log line, the libraries' included


class ConsoleFilter(logging.Filter):
    """The console shows the run's own lines and every warning; the libraries' INFO lines (eight of Accelerate's per
    checkpoint, say) only with --verbose. The log file keeps them all."""

    OWN = ("__main__", "hf_ddpm")

    def __init__(self, verbose: bool):
        super().__init__()
        self.verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        return self.verbose or record.levelno >= logging.WARNING or record.name.split(".")[0] in self.OWN


def make_accelerator(args: argparse.Namespace, resume_path: str | None) -> Accelerator:
    """The Accelerator of the run, with torch's threads set for a CPU and the logs set up; the checkpoint to resume,
    if any, is checked against the flags first."""
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=None if args.report_to == "none" else args.report_to,
        project_config=ProjectConfiguration(
            project_dir=args.output_dir, logging_dir=os.path.join(args.output_dir, args.logging_dir)
        ),
        # `accelerate launch --multi_gpu` starts the processes with torchrun; on a machine without GPUs Accelerate
        # joins them into a (gloo) process group only when told that the processes run on CPUs.
        cpu=launched_distributed_without_gpus(),
    )
    if accelerator.mixed_precision == "fp16" and accelerator.device.type == "cpu":
        raise ValueError(
            "Mixed precision fp16 (--mixed_precision or the accelerate config) needs a GPU: on CPU it would train in "
            "fp32 unannounced. Use bf16 or no."
        )
    if resume_path is not None:
        check_checkpoint_matches(resume_path, args)
    if not logging.getLogger().handlers:  # a program that embeds the training keeps its own console
        logging.basicConfig(format=LOG_FORMAT, level=logging.INFO)
        logging.getLogger().handlers[0].addFilter(ConsoleFilter(args.verbose))
    if accelerator.mixed_precision == "bf16" and accelerator.device.type == "cpu":
        bf16_support = cpu_bf16_support()
        (logger.info if bf16_support.native else logger.warning)(bf16_support.message)
    # On a CPU each process takes its share of the idle cores, unless the user chose a count: a torch thread sharing
    # a core with another busy process stalls every parallel region, and accelerate launch's own default is 1.
    threads = choose_torch_threads(accelerator.device.type, args.dataloader_num_workers)
    torch.set_num_threads(threads.threads)
    logger.info(f"torch threads: {threads.threads} ({threads.reason})")
    if accelerator.device.type == "cpu":
        logger.info(keep_freed_memory())
    return accelerator


def launched_distributed_without_gpus() -> bool:
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
    return launched and not torch.cuda.is_available()


def loggable(config: dict) -> dict:
    """The flags as tensorboard hyperparameters: plain values only, and never the Hub token."""
    return {
        key: value for key, value in config.items() if key != "hub_token" and isinstance(value, (int, float, str, bool))
    }


def end_processes(accelerator: Accelerator) -> None:
    """Ends the trackers and the process group, once the run has let go of its DDP wrapper (`unwrap_model`), while
    the group is still registered: the wrapper's gradient reducer holds the group, and when the reducer was the last
    to let go (at exit), the group's gloo threads were joined from its destructor under the GIL that one of them
    waited for, a hang seen once in about ten two-process runs. Released first, the reducer's last work ends while all
    processes meet."""
    accelerator.free_memory()
    accelerator.wait_for_everyone()
    accelerator.end_training()


def log_to_file(folder: str) -> logging.Handler:
    """Sends every log line at INFO and above, the libraries' included, to `folder`/train.log as well; returns the
    handler, for `stop_logging_to_file`."""
    os.makedirs(folder, exist_ok=True)
    handler = logging.FileHandler(os.path.join(folder, LOG_FILE), encoding="utf-8")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.setLevel(logging.INFO)
    logging.getLogger().addHandler(handler)
    return handler


def stop_logging_to_file(handler: logging.Handler | None) -> None:
    if handler is not None:
        logging.getLogger().removeHandler(handler)
        handler.close()
