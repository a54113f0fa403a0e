"""Training on several machines with accelerate's own launcher: two "machines" on one host, each an `accelerate
launch --num_machines 2 --machine_rank r`, meeting at 127.0.0.1 and training on CPUs over gloo, with one output
folder between them as a shared file system would give."""

import json
import os
import sys

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from helpers import launch_with_free_port, tiny_flags
from hf_ddpm.pipelines import DDPMCFGPipeline

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]

REPOSITORY = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ACCELERATE = os.path.join(os.path.dirname(sys.executable), "accelerate")

# The training script's main(), recording which training examples this process reads (the data loader fetches each
# example of a batch by its index from the TensorDataset of the decoded images) and, after every optimizer step,
# gathering every process's weights to record whether they are all equal; rank 0 keeps its last weights.
RECORD_EXAMPLES = """
import json
import os
import sys

import torch
import torch.distributed as dist
from torch.optim.optimizer import register_optimizer_step_post_hook

from hf_ddpm.training.train import main

read, replicas_equal = [], []
get_example = torch.utils.data.TensorDataset.__getitem__


def recording(self, index):
    read.append(int(index))
    return get_example(self, index)


def compare_replicas(optimizer, args, kwargs):
    weights = torch.cat([p.detach().reshape(-1) for group in optimizer.param_groups for p in group["params"]])
    gathered = [torch.empty_like(weights) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, weights)
    replicas_equal.append(all(torch.equal(weights, other) for other in gathered))
    if dist.get_rank() == 0:
        torch.save(weights, os.path.join(sys.argv[1], "last-weights-0.pt"))


torch.utils.data.TensorDataset.__getitem__ = recording
register_optimizer_step_post_hook(compare_replicas)
main(sys.argv[2:])
with open(os.path.join(sys.argv[1], f"examples-{os.environ['RANK']}.json"), "w") as file:
    json.dump({"read": read, "replicas_equal": replicas_equal}, file)
"""


def test_two_machines_train_on_disjoint_shards_and_one_of_them_writes_a_loadable_pipeline(tmp_path):
    output_dir, records = tmp_path / "run", tmp_path / "records"
    records.mkdir()
    (tmp_path / "record_examples.py").write_text(RECORD_EXAMPLES)
    # 64 images in batches of 8 are 8 batches an epoch; the two machines' one process each take 4, so one epoch is
    # 4 optimizer steps, and the checkpoint at step 4 holds both processes' random states.
    flags = tiny_flags(output_dir, "--num_epochs", "1", "--checkpointing_steps", "4", "--report_to", "tensorboard")

    def machines(port: int) -> list[list[str]]:
        return [
            [
                ACCELERATE,
                "launch",
                "--multi_gpu",
                "--num_machines",
                "2",
                "--num_processes",
                "2",
                "--machine_rank",
                str(rank),
                "--main_process_ip",
                "127.0.0.1",
                "--main_process_port",
                str(port),
                str(tmp_path / "record_examples.py"),
                str(records),
                *flags,
            ]
            for rank in (0, 1)
        ]

    # A fresh HF_HOME: no accelerate config of the user's (nor a saved default) takes part.
    env = dict(os.environ, HF_HOME=str(tmp_path / "hf_home"))
    first, second = launch_with_free_port(machines, env=env, cwd=REPOSITORY, timeout=600)
    assert first.returncode == 0, first.stderr[-4000:]
    assert second.returncode == 0, second.stderr[-4000:]

    # The main process (on the first machine) logs for both; the run is 2 processes of batch 8.
    assert "2 process(es) x batch 8" in first.stderr and "4 optimizer steps (1 epochs)" in first.stderr
    assert "Saved the pipeline to" in first.stderr and "Saved the pipeline to" not in second.stderr

    # Accelerate gives each process every other batch of the epoch: the two read disjoint halves of the 64 images.
    recorded = [json.loads((records / f"examples-{rank}.json").read_text()) for rank in (0, 1)]
    read = [record["read"] for record in recorded]
    assert len(read[0]) == len(read[1]) == 32 and len(set(read[0])) == len(set(read[1])) == 32
    assert not set(read[0]) & set(read[1]) and set(read[0]) | set(read[1]) == set(range(64))

    # One writer: one tensorboard event file, one pipeline; the checkpoint holds the state of both processes, each
    # written by its own machine into the shared folder, and no temporary folder is left behind.
    assert len([name for name in os.listdir(output_dir / "logs" / "train_ddpm") if name.startswith("events")]) == 1
    events = EventAccumulator(str(output_dir / "logs" / "train_ddpm"))
    events.Reload()
    assert [event.step for event in events.Scalars("loss")] == [1, 2, 3, 4]
    assert {"random_states_0.pkl", "random_states_1.pkl", "model.safetensors"} <= set(
        os.listdir(output_dir / "checkpoint-4")
    )
    assert not [name for name in os.listdir(output_dir) if name.endswith((".partial", ".replaced"))]
    # Different data, one model: after each of the 4 optimizer steps both processes hold the same weights, and the
    # pipeline saved is rank 0's last weights (no EMA: the pipeline holds the trained weights themselves).
    assert recorded[0]["replicas_equal"] == recorded[1]["replicas_equal"] == [True] * 4
    pipe = DDPMCFGPipeline.from_pretrained(output_dir)
    saved = torch.cat([parameter.detach().reshape(-1) for parameter in pipe.unet.parameters()])
    assert torch.equal(saved, torch.load(records / "last-weights-0.pt"))
    pipe.set_progress_bar_config(disable=True)
    images = pipe(class_labels=[0, 9], guidance_scale=2.0, num_inference_steps=2, output_type="np").images
    assert images.shape == (2, 8, 8, 1) and np.isfinite(images).all()
