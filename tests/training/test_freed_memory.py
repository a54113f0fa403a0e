"""`keep_freed_memory`: freed activations stay with the process, so a step does not fault fresh pages in again."""

import ctypes
import ctypes.util
import platform
import subprocess
import sys

import pytest

from hf_ddpm.cpu import keep_freed_memory

# A step as a training or denoising step allocates: many blocks of a few MiB, written, then all freed.
STEPS = r"""
import ctypes, ctypes.util, resource

libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]


def step(block=8 << 20, count=16):
    blocks = [libc.malloc(block) for _ in range(count)]
    for address in blocks:
        libc.memset(address, 1, block)
    for address in blocks:
        libc.free(address)


def faults_of_five_steps():
    step()  # the first step finds every page fresh
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        step()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
"""

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the thresholds are glibc's")


@glibc
def test_kept_memory_is_reused_where_the_default_faults_every_page_in_again():
    pages_per_step = 16 * (8 << 20) // 4096
    default = subprocess.run(
        [sys.executable, "-c", STEPS + "print(faults_of_five_steps())"], capture_output=True, text=True, check=True
    )
    # glibc's defaults give the blocks back to the system when they are freed: each step faults most pages in again.
    assert int(default.stdout) > 5 * pages_per_step // 2

    assert keep_freed_memory() == "freed memory: kept for reuse (glibc heap blocks up to 32 MiB, never trimmed)"
    namespace = {}
    exec(STEPS, namespace)
    assert namespace["faults_of_five_steps"]() < pages_per_step // 20


def test_without_glibc_nothing_is_changed_and_the_log_says_so(monkeypatch):
    class NoMallopt:
        def __init__(self, name):
            pass

    monkeypatch.setattr(ctypes, "CDLL", NoMallopt)
    assert keep_freed_memory() == "freed memory: left to the system allocator (not glibc)"
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    assert "left to the system allocator" in keep_freed_memory()
