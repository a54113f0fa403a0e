"""How a training run stops early, and says so.

Preemption: SIGTERM (what Slurm, Kubernetes and `kill` send before SIGKILL), SIGINT (Ctrl-C) and SIGUSR1 (Slurm's
`--signal=B:USR1@90` warning) only set a flag; the handler does no I/O. The training loop looks at the flag at every
step boundary (and the preview and evaluation loops between their batches), agrees with the other processes through
Accelerate's trigger (a reduction, so every rank stops at the same step), writes one checkpoint and exits with
`PREEMPTED_EXIT_STATUS`. Lightning and the HF Trainer handle SIGTERM the same way: a flag, checked by the loop.

Every other way a run ends early raises a `TrainingStopped` with a message that says what happened and how to go
on; the script's entry point prints it, without a traceback, and exits with its status.
"""

from __future__ import annotations

import signal
import threading

PREEMPTION_SIGNALS = ("SIGTERM", "SIGINT", "SIGUSR1")
# EX_TEMPFAIL of sysexits.h: "try again later". A scheduler (or a wrapper script) can requeue on it.
PREEMPTED_EXIT_STATUS = 75
USAGE_EXIT_STATUS = 2  # as argparse exits for a bad flag


class TrainingStopped(Exception):
    """A run that ends before its last step for a reason outside the code: the message says what and how to go on."""

    exit_status = 1


class Preempted(TrainingStopped):
    """The run was asked to stop by a signal and saved a checkpoint to resume from."""

    exit_status = PREEMPTED_EXIT_STATUS


class StopRequested(Exception):
    """Raised inside a preview or an evaluation to abandon it because the run is stopping."""


class PreemptionSignals:
    """Within `with PreemptionSignals() as signals:`, the preemption signals set `signals.received` (the name of the
    first one) instead of killing the process; the previous handlers come back on exit. A second SIGINT while the
    run saves interrupts it as Ctrl-C normally does. Outside the main thread (where Python cannot take signals) it
    does nothing."""

    def __init__(self):
        self.received: str | None = None
        self._previous = {}

    def __enter__(self) -> PreemptionSignals:
        if threading.current_thread() is threading.main_thread():
            for name in PREEMPTION_SIGNALS:
                number = getattr(signal, name, None)
                if number is not None:
                    self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous = {}

    def _handle(self, number: int, frame) -> None:
        if self.received is None:
            self.received = signal.Signals(number).name
        if number == signal.SIGINT:  # the next Ctrl-C is the user insisting
            signal.signal(signal.SIGINT, signal.default_int_handler)

    def raise_if_received(self) -> None:
        """For loops of one process (a preview): `StopRequested` once a signal has come."""
        if self.received is not None:
            raise StopRequested(self.received)
