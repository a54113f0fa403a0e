"""What this CPU offers a training process: bfloat16 instructions (`cpu_bf16_support`, `resolve_mixed_precision`),
freed memory kept for reuse (`keep_freed_memory`), and how many torch threads
each process takes (`choose_torch_threads`: its share of the cores idle when it starts, unless the user or a
launcher chose a count)."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import io
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch


class CpuBf16Support(NamedTuple):
    """Whether this CPU has bfloat16 instructions, and a line that says so and what follows for --mixed_precision."""

    native: bool
    message: str


def read_cpuinfo(cpuinfo_path: str = "/proc/cpuinfo") -> tuple[str | None, set[str]]:
    """The CPU's model name and its feature flags (`avx2`, `avx512_bf16`, ...), as Linux lists them; `(None, set())`
    where there is no such file."""
    try:
        with open(cpuinfo_path, encoding="utf-8") as cpuinfo:
            text = cpuinfo.read()
    except OSError:
        return None, set()
    model = re.search(r"^model name\s*:\s*(.*)$", text, flags=re.MULTILINE)
    flags = re.search(r"^flags\s*:\s*(.*)$", text, flags=re.MULTILINE)
    return (model.group(1).strip() if model else None), set(flags.group(1).split() if flags else ())


def cpu_bf16_support(cpuinfo_path: str = "/proc/cpuinfo") -> CpuBf16Support:
    """Whether bf16 autocast can pay on this CPU: only with bf16 instructions (the flags `avx512_bf16` or `amx_bf16`).
    Elsewhere bf16 runs emulated, in kernels that make training several times slower than fp32."""
    capability = torch.backends.cpu.get_cpu_capability()
    _, flags = read_cpuinfo(cpuinfo_path)
    found = [flag for flag in ("avx512_bf16", "amx_bf16") if flag in flags]
    if found:
        return CpuBf16Support(
            True,
            f"bf16 on CPU: this CPU has bf16 instructions ({', '.join(found)}; torch uses "
            f"{capability}): bf16 autocast can pay here.",
        )
    return CpuBf16Support(
        False,
        f"bf16 on CPU: this CPU has no bf16 instructions (no avx512_bf16 or amx_bf16; torch "
        f"uses {capability}): bf16 autocast is emulated here and trains several times slower "
        f"than fp32. Use --mixed_precision no.",
    )


# glibc's mallopt parameters, and the largest threshold it accepts for serving a block from the heap (on 64 bits).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_LARGEST_HEAP_BLOCK = 32 * 2**20
_NEVER_TRIM = 2**31 - 1


def keep_freed_memory() -> str:
    """
    Tells the C allocator to keep freed memory for reuse instead of handing it back to the system, and says what it
    did (a line for the log).

    PyTorch on a CPU takes each activation from `malloc` and frees it when the op that reads it is done. glibc hands
    freed blocks back to the system (blocks above its mmap threshold at once, the top of the heap once it grows past
    the trim threshold), so every training step and every denoising step touches fresh pages again, and the kernel
    zeroes each on its first touch: tens of thousands of page faults a step, which cost a noticeable share of the
    step (docs/speed.md). With the thresholds fixed at their largest, blocks up to 32 MiB come from the heap and stay
    there, and the process keeps its peak memory for reuse. Only glibc has these knobs; elsewhere this does nothing.
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return "freed memory: left to the system allocator (not glibc)"
    if not (mallopt(_M_MMAP_THRESHOLD, _LARGEST_HEAP_BLOCK) and mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM)):
        return "freed memory: left to the system allocator (glibc refused the thresholds)"
    return "freed memory: kept for reuse (glibc heap blocks up to 32 MiB, never trimmed)"


MIXED_PRECISION_CHOICES = ("no", "bf16", "auto")


def resolve_mixed_precision(choice: str, device_type: str = "cpu") -> str:
    """`"auto"` made concrete for a device: `"bf16"` on a GPU and on a CPU with bf16 instructions (AVX512-BF16, AMX),
    where bf16 autocast pays; `"no"` elsewhere, where a CPU would emulate it. Other choices are returned as given."""
    if choice != "auto":
        return choice
    if device_type == "cpu":
        return "bf16" if cpu_bf16_support().native else "no"
    return "bf16"


def cpu_threads_per_process(
    num_processes_on_node: int, dataloader_num_workers: int, idle_cores: int | None = None
) -> int:
    """How many intra-op threads torch should use in each training process on a CPU.

    A torch thread that shares its core with another busy process stalls every parallel region it takes part in: on
    a 2-core machine where one other process is busy, 2 threads train several times slower than 1. So only idle
    cores count: those that no other work keeps busy when training starts (`idle_cores`, measured when not given),
    less one for each data-loading worker. They are shared equally between the training processes on this machine,
    at least one thread each.
    """
    if idle_cores is None:
        idle_cores = _idle_cores()
    free = idle_cores - num_processes_on_node * dataloader_num_workers
    return max(1, free // num_processes_on_node)


def _idle_cores() -> int:
    """Cores this process may use that were idle over the last fifth of a second."""
    import psutil  # a dependency of accelerate

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else psutil.cpu_count()
    busy = round(psutil.cpu_percent(interval=0.2) / 100 * psutil.cpu_count())
    return min(usable, psutil.cpu_count() - busy)


class TorchThreads(NamedTuple):
    """How many intra-op threads torch should use, and why (for the log: `torch threads: {threads} ({reason})`)."""

    threads: int
    reason: str


@dataclass
class Launcher:
    """The launcher that started this process, and what its user told it about threads.

    Args:
        name: "accelerate launch" or "torchrun".
        omp_num_threads: OMP_NUM_THREADS in the launcher's own environment (`None`: it had none), i.e. the user's.
        num_cpu_threads_per_process: `accelerate launch --num_cpu_threads_per_process` (`None`: not given).
        readable: whether the launcher's environment could be read; if not, what it passed on cannot be told from
            its own default and is taken as the user's.
    """

    name: str
    omp_num_threads: str | None = None
    num_cpu_threads_per_process: int | None = None
    readable: bool = True


def choose_torch_threads(
    device_type: str,
    dataloader_num_workers: int = 0,
    *,
    environ: Mapping[str, str] | None = None,
    launcher: Launcher | None | Literal["find"] = "find",
    idle_cores: int | None = None,
    current_threads: int | None = None,
) -> TorchThreads:
    """How many intra-op threads torch should use in this training process, and why.

    A thread count that the user chose stands: OMP_NUM_THREADS set by the user, or `accelerate launch
    --num_cpu_threads_per_process`. Otherwise a process on a CPU takes its share of the idle cores
    (`cpu_threads_per_process`). `accelerate launch` always sets OMP_NUM_THREADS for the processes it starts, and
    without --num_cpu_threads_per_process it sets it to its own default (1, or with `--cpu` the physical cores per
    process); torchrun sets 1 when it starts several processes. Neither marks that the value is its default, so the
    launcher is found among this process's ancestors and asked: the value is the user's only when OMP_NUM_THREADS
    was in the launcher's own environment or --num_cpu_threads_per_process on its command line.

    Args:
        device_type: the training device (`accelerator.device.type`); other than "cpu", torch's setting is kept.
        dataloader_num_workers: data-loading worker processes of each training process.
        environ: this process's environment (default `os.environ`); LOCAL_WORLD_SIZE gives the training processes
            on this machine.
        launcher: the launcher that started this process (`None`: none); "find" looks it up with `find_launcher`.
        idle_cores: cores that no other work keeps busy, by default measured (only when needed).
        current_threads: torch's present thread count, by default `torch.get_num_threads()`.
    """
    environ = os.environ if environ is None else environ
    current_threads = torch.get_num_threads() if current_threads is None else current_threads
    if device_type != "cpu":
        return TorchThreads(current_threads, f"training on {device_type}: torch's setting kept")

    omp = environ.get("OMP_NUM_THREADS")
    replaced = ""
    if omp is not None:
        launcher = find_launcher() if launcher == "find" else launcher
        if launcher is None:
            return _user_threads(omp, current_threads, "OMP_NUM_THREADS={}, set by the user")
        if launcher.num_cpu_threads_per_process is not None:
            threads = launcher.num_cpu_threads_per_process
            return _user_threads(omp, current_threads, f"--num_cpu_threads_per_process {threads} of {launcher.name}")
        if launcher.omp_num_threads is not None:
            return _user_threads(omp, current_threads, "OMP_NUM_THREADS={}, set by the user for " + launcher.name)
        if not launcher.readable:
            return _user_threads(
                omp,
                current_threads,
                f"OMP_NUM_THREADS={{}} from {launcher.name}, kept: whether the user set it cannot be told here",
            )
        replaced = f"; replaces {launcher.name}'s default OMP_NUM_THREADS={omp}"

    processes = int(environ.get("LOCAL_WORLD_SIZE", 1))
    idle_cores = _idle_cores() if idle_cores is None else idle_cores
    threads = cpu_threads_per_process(processes, dataloader_num_workers, idle_cores)
    reason = f"{idle_cores} idle cores, {processes} training process(es) on this machine"
    if dataloader_num_workers:
        reason += f" with {dataloader_num_workers} data-loading worker(s) each"
    return TorchThreads(threads, reason + replaced)


def _user_threads(omp: str, current_threads: int, reason: str) -> TorchThreads:
    """The thread count that OMP_NUM_THREADS gives (its first number: "4,2" nests levels), else torch's own."""
    try:
        threads = int(omp.split(",")[0])
    except ValueError:
        threads = 0
    return TorchThreads(threads if threads > 0 else current_threads, reason.format(omp))


def find_launcher() -> Launcher | None:
    """The nearest ancestor of this process that is `accelerate launch` or torchrun, with what its user told it
    about threads; `None` when there is none (`python training/train.py`, the demo)."""
    import psutil  # a dependency of accelerate

    try:
        ancestors = psutil.Process().parents()
    except (psutil.Error, OSError):
        return None
    for process in ancestors:
        try:
            cmdline = process.cmdline()
        except (psutil.Error, OSError):
            continue
        if launcher_arguments(cmdline)[0] is None:
            continue
        try:
            environ = process.environ()  # the environment it was started with
        except (psutil.Error, OSError, NotImplementedError):
            environ = None
        return launcher_from(cmdline, environ)
    return None


def launcher_from(cmdline: Sequence[str], environ: Mapping[str, str] | None) -> Launcher | None:
    """The `Launcher` that a process with this command line and environment (`None`: unreadable) is, if any."""
    name, arguments = launcher_arguments(cmdline)
    if name is None:
        return None
    if environ is None:
        return Launcher(name, readable=False)
    return Launcher(name, environ.get("OMP_NUM_THREADS"), _num_cpu_threads_per_process(name, arguments))


def launcher_arguments(cmdline: Sequence[str]) -> tuple[str | None, list[str]]:
    """("accelerate launch" or "torchrun", the launcher's own arguments) when `cmdline` runs one, else (None, [])."""
    program, arguments = _program(list(cmdline))
    if program in ("accelerate", "accelerate.commands.accelerate_cli") and arguments[:1] == ["launch"]:
        return "accelerate launch", arguments[1:]
    if program in ("accelerate-launch", "accelerate.commands.launch"):
        return "accelerate launch", arguments
    if program in ("torchrun", "torch.distributed.run", "torch.distributed.launch"):
        return "torchrun", arguments
    return None, []


def _program(words: list[str]) -> tuple[str, list[str]]:
    """The program a command line runs (a script's or executable's name, or the module of `python -m`), and its
    arguments."""
    if not words:
        return "", []
    name = os.path.splitext(os.path.basename(words[0]))[0]
    if not name.startswith("python"):
        return name, words[1:]
    index = 1
    while index < len(words) and words[index].startswith("-") and words[index] not in ("-m", "-c", "-"):
        index += 2 if words[index] in ("-X", "-W") else 1  # the interpreter's own options
    if index + 1 < len(words) and words[index] == "-m":
        return words[index + 1], words[index + 2 :]
    if index < len(words) and words[index] not in ("-c", "-"):
        return os.path.splitext(os.path.basename(words[index]))[0], words[index + 1 :]
    return name, words[index:]


def _num_cpu_threads_per_process(name: str, arguments: list[str]) -> int | None:
    if name != "accelerate launch":
        return None
    # accelerate's own parser: it alone knows which words are its flags (`--num-cpu-threads-per-process=2` too) and
    # where the training script's begin.
    from accelerate.commands.launch import launch_command_parser

    try:
        with contextlib.redirect_stderr(io.StringIO()):  # argparse prints its complaints before exiting
            parsed, _ = launch_command_parser().parse_known_args(arguments)
    except (SystemExit, Exception):  # a command line this version of accelerate does not read: assume the default
        return None
    return parsed.num_cpu_threads_per_process
