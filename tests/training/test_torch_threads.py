"""How many torch threads a training process uses on a CPU: the user's choice stands; a launcher's default does not.

`accelerate launch` sets OMP_NUM_THREADS for the processes it starts (1 unless told otherwise) without saying that
it was its own default; `choose_torch_threads` asks the launcher process what its user gave it."""

import json
import os
import re
import subprocess
import sys

import pytest

from helpers import launch_with_free_port, tiny_flags
from hf_ddpm.cpu import Launcher, TorchThreads, choose_torch_threads, find_launcher, launcher_arguments, launcher_from

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]

REPOSITORY = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ACCELERATE = os.path.join(os.path.dirname(sys.executable), "accelerate")
ACCELERATE_DEFAULT = Launcher("accelerate launch")  # no OMP_NUM_THREADS, no --num_cpu_threads_per_process


def choose(environ: dict, launcher: Launcher | None, idle_cores: int = 2, workers: int = 0) -> TorchThreads:
    return choose_torch_threads(
        "cpu", workers, environ=environ, launcher=launcher, idle_cores=idle_cores, current_threads=8
    )


# ----- the decision -----
def test_started_directly_without_omp_num_threads_takes_the_idle_cores():
    assert choose({}, None) == (2, "2 idle cores, 1 training process(es) on this machine")
    assert choose({}, None, idle_cores=1).threads == 1  # a 2-core machine with one other busy process
    assert choose({}, None, idle_cores=4, workers=1) == (
        3,
        "4 idle cores, 1 training process(es) on this machine with 1 data-loading worker(s) each",
    )


def test_omp_num_threads_of_the_user_stands_without_a_launcher():
    assert choose({"OMP_NUM_THREADS": "3"}, None) == (3, "OMP_NUM_THREADS=3, set by the user")
    assert choose({"OMP_NUM_THREADS": "1"}, None, idle_cores=16).threads == 1
    assert choose({"OMP_NUM_THREADS": "4,2"}, None).threads == 4  # nested levels: the outer one
    assert choose({"OMP_NUM_THREADS": "many"}, None).threads == 8  # unreadable: torch's own count


def test_accelerate_launch_default_is_replaced_by_the_idle_cores():
    threads = choose({"OMP_NUM_THREADS": "1"}, ACCELERATE_DEFAULT)
    assert threads == (
        2,
        "2 idle cores, 1 training process(es) on this machine; replaces accelerate launch's default OMP_NUM_THREADS=1",
    )
    # With --cpu (or use_cpu in its config) accelerate's default is the physical cores per process, here 2; on a
    # machine with one core busy elsewhere that would share it.
    assert choose({"OMP_NUM_THREADS": "2"}, ACCELERATE_DEFAULT, idle_cores=1).threads == 1


def test_several_processes_on_one_machine_share_the_idle_cores():
    environ = {"OMP_NUM_THREADS": "1", "LOCAL_WORLD_SIZE": "2"}
    assert choose(environ, ACCELERATE_DEFAULT, idle_cores=4) == (
        2,
        "4 idle cores, 2 training process(es) on this machine; replaces accelerate launch's default OMP_NUM_THREADS=1",
    )
    assert choose(environ, ACCELERATE_DEFAULT, idle_cores=4, workers=1).threads == 1
    assert choose(environ, Launcher("torchrun"), idle_cores=8).threads == 4


def test_the_users_choice_given_to_accelerate_launch_stands():
    flag = Launcher("accelerate launch", num_cpu_threads_per_process=1)
    assert choose({"OMP_NUM_THREADS": "1"}, flag, idle_cores=16) == (
        1,
        "--num_cpu_threads_per_process 1 of accelerate launch",
    )
    exported = Launcher("accelerate launch", omp_num_threads="1")
    assert choose({"OMP_NUM_THREADS": "1"}, exported, idle_cores=16) == (
        1,
        "OMP_NUM_THREADS=1, set by the user for accelerate launch",
    )


def test_a_launcher_whose_environment_cannot_be_read_is_taken_at_its_word():
    unreadable = Launcher("accelerate launch", readable=False)
    threads = choose({"OMP_NUM_THREADS": "1"}, unreadable, idle_cores=16)
    assert threads.threads == 1 and "whether the user set it cannot be told" in threads.reason


def test_on_a_gpu_torch_keeps_its_own_thread_count():
    threads = choose_torch_threads("cuda", environ={"OMP_NUM_THREADS": "1"}, launcher=None, current_threads=8)
    assert threads == (8, "training on cuda: torch's setting kept")


# ----- finding what the user told the launcher -----
@pytest.mark.parametrize(
    "cmdline, name, arguments",
    [
        (
            ["/env/bin/python3.11", "/env/bin/accelerate", "launch", "--cpu", "train.py"],
            "accelerate launch",
            ["--cpu", "train.py"],
        ),
        (["python", "-u", "-X", "dev", "-m", "accelerate.commands.launch", "t.py"], "accelerate launch", ["t.py"]),
        (["python", "-m", "accelerate.commands.accelerate_cli", "launch", "t.py"], "accelerate launch", ["t.py"]),
        (["/env/bin/accelerate-launch", "t.py"], "accelerate launch", ["t.py"]),
        (
            ["/env/bin/python", "/env/bin/torchrun", "--nproc_per_node", "2", "t.py"],
            "torchrun",
            ["--nproc_per_node", "2", "t.py"],
        ),
        (["python", "-m", "torch.distributed.run", "t.py"], "torchrun", ["t.py"]),
        (["/env/bin/accelerate", "config"], None, []),
        (["python", "train.py", "accelerate", "launch"], None, []),
        (["python", "-m", "pytest"], None, []),
        (["bash", "-c", "accelerate launch t.py"], None, []),
        ([], None, []),
    ],
)
def test_launcher_arguments_recognise_accelerate_launch_and_torchrun(cmdline, name, arguments):
    assert launcher_arguments(cmdline) == (name, arguments)


def test_num_cpu_threads_per_process_is_read_with_accelerates_own_parser():
    launch = ["/env/bin/python", "/env/bin/accelerate", "launch"]
    assert launcher_from([*launch, "--num_cpu_threads_per_process", "3", "t.py"], {}).num_cpu_threads_per_process == 3
    assert launcher_from([*launch, "--num-cpu-threads-per-process=2", "t.py"], {}).num_cpu_threads_per_process == 2
    # The training script's own flag of that name is not accelerate's.
    script_flag = launcher_from([*launch, "t.py", "--num_cpu_threads_per_process", "3"], {"OMP_NUM_THREADS": "5"})
    assert script_flag == Launcher("accelerate launch", omp_num_threads="5", num_cpu_threads_per_process=None)
    assert launcher_from([*launch, "t.py"], None) == Launcher("accelerate launch", readable=False)
    assert launcher_from(["python", "t.py"], {}) is None


def test_no_launcher_is_found_above_a_process_started_directly():
    assert find_launcher() is None  # pytest, started from a shell


# ----- under the real launchers -----
# Prints this process's decision, with 2 idle cores: a machine's load must not decide the outcome.
PRINT_DECISION = """
import json

from hf_ddpm.cpu import choose_torch_threads

print("DECISION " + json.dumps(choose_torch_threads("cpu", idle_cores=2)))
"""


def launch_environment(tmp_path, **variables) -> dict:
    """The tests' environment less their OMP_NUM_THREADS=1 (tests/conftest.py), with a fresh HF_HOME: no accelerate
    config of the user's (nor a saved default) takes part."""
    env = {key: value for key, value in os.environ.items() if key != "OMP_NUM_THREADS"}
    return dict(env, HF_HOME=str(tmp_path / "hf_home"), **variables)


def decisions(output: str) -> list[list]:
    return [json.loads(line.split(" ", 1)[1]) for line in output.splitlines() if line.startswith("DECISION ")]


# One `accelerate launch --num_processes 1 decide.py` per case: its flags, its environment and the decision expected.
ONE_PROCESS_LAUNCHES = {
    "accelerate-default": (
        [],
        {},
        [
            2,
            "2 idle cores, 1 training process(es) on this machine; replaces accelerate launch's default "
            "OMP_NUM_THREADS=1",
        ],
    ),
    "flag": (["--num_cpu_threads_per_process", "1"], {}, [1, "--num_cpu_threads_per_process 1 of accelerate launch"]),
    "exported": ([], {"OMP_NUM_THREADS": "1"}, [1, "OMP_NUM_THREADS=1, set by the user for accelerate launch"]),
}
WITH_A_CONFIG = "with-a-config"  # `accelerate launch decide.py` with the config that `accelerate config default` writes


def start_launch(folder, case: str) -> subprocess.Popen:
    """Starts the launch of `case` in `folder` (its decide.py, HF_HOME and output files)."""
    folder.mkdir()
    (folder / "decide.py").write_text(PRINT_DECISION)
    if case == WITH_A_CONFIG:
        from accelerate.utils import write_basic_config

        config = folder / "hf_home" / "accelerate" / "default_config.yaml"
        config.parent.mkdir(parents=True)
        write_basic_config(mixed_precision="no", save_location=str(config))
        command, variables = [ACCELERATE, "launch", str(folder / "decide.py")], {}
    else:
        flags, variables, _ = ONE_PROCESS_LAUNCHES[case]
        command = [ACCELERATE, "launch", "--num_processes", "1", *flags, str(folder / "decide.py")]
    with open(folder / "stdout", "w") as stdout, open(folder / "stderr", "w") as stderr:
        return subprocess.Popen(
            command, env=launch_environment(folder, **variables), cwd=REPOSITORY, stdout=stdout, stderr=stderr
        )


@pytest.fixture(scope="module")
def one_process_launches(request, tmp_path_factory):
    """The one-process launches of the tests selected, all started at once: each is mostly the start of two Python
    processes (the launcher, then the script), which then run side by side where there are cores for them. A test
    takes its own (`finished`); any left are stopped here."""
    tests = {
        test_under_accelerate_launch_only_its_own_default_is_replaced.__name__: None,
        test_under_accelerate_launch_with_a_config_its_default_is_replaced.__name__: WITH_A_CONFIG,
    }
    cases = {
        tests[item.originalname] or item.callspec.id
        for item in request.session.items
        if getattr(item, "originalname", None) in tests
    }
    root = tmp_path_factory.mktemp("launches")
    launches = {
        case: (root / case, start_launch(root / case, case))
        for case in [*ONE_PROCESS_LAUNCHES, WITH_A_CONFIG]
        if case in cases
    }
    yield launches
    for _, process in launches.values():
        process.kill()
        process.wait()


def finished(launches: dict, case: str) -> subprocess.CompletedProcess:
    folder, process = launches.pop(case)
    process.wait(timeout=300)
    return subprocess.CompletedProcess(
        process.args, process.returncode, (folder / "stdout").read_text(), (folder / "stderr").read_text()
    )


@pytest.mark.parametrize("case", list(ONE_PROCESS_LAUNCHES))
def test_under_accelerate_launch_only_its_own_default_is_replaced(one_process_launches, case):
    expected = ONE_PROCESS_LAUNCHES[case][2]
    run = finished(one_process_launches, case)
    assert run.returncode == 0, run.stderr[-4000:]
    assert decisions(run.stdout) == [expected]


def test_under_accelerate_launch_with_a_config_its_default_is_replaced(one_process_launches):
    """A config as `accelerate config default` writes it on a machine without GPUs, in the default location. It says
    use_cpu, and then accelerate's default is the physical cores per process (not 1)."""
    run = finished(one_process_launches, WITH_A_CONFIG)
    assert run.returncode == 0, run.stderr[-4000:]
    [[threads, reason]] = decisions(run.stdout)
    assert threads == 2 and re.search(r"; replaces accelerate launch's default OMP_NUM_THREADS=\d+$", reason), reason


def test_two_processes_under_accelerate_launch_share_the_idle_cores(tmp_path):
    (tmp_path / "decide.py").write_text(PRINT_DECISION)
    [run] = launch_with_free_port(
        lambda port: [
            [
                ACCELERATE,
                "launch",
                "--multi_gpu",
                "--num_processes",
                "2",
                "--main_process_port",
                str(port),
                str(tmp_path / "decide.py"),
            ]
        ],
        env=launch_environment(tmp_path),
        cwd=REPOSITORY,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    expected = [
        1,
        "2 idle cores, 2 training process(es) on this machine; replaces accelerate launch's default OMP_NUM_THREADS=1",
    ]
    assert decisions(run.stdout) == [expected, expected]


# ----- the training script: it logs `torch threads: {threads} ({reason})` after setting them -----


def test_documented_accelerate_launch_without_a_config_trains_on_the_idle_cores(tmp_path):
    run = subprocess.run(
        [
            ACCELERATE,
            "launch",
            os.path.join("training", "train.py"),
            *tiny_flags(tmp_path / "run", "--max_train_steps", "1"),
        ],
        env=launch_environment(tmp_path),
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    logged = re.search(
        r"torch threads: (\d+) \((\d+) idle cores, 1 training process\(es\) on this machine; "
        r"replaces accelerate launch's default OMP_NUM_THREADS=1\)",
        run.stderr,
    )
    assert logged, run.stderr[-4000:]
    threads, idle = int(logged[1]), int(logged[2])
    assert threads == max(1, idle)
    assert f"; {threads} torch threads" in run.stderr  # what torch was then set to
