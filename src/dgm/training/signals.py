"""SIGINT and SIGTERM during training: finish the step, write a checkpoint, and exit 130 or 143.

While ``fit`` trains, ``StopSignals`` replaces the handlers of SIGINT (Ctrl-C) and SIGTERM (``kill``, a job
scheduler's preemption) with one that only records the signal; ``fit`` looks at it at the next step
boundary, writes a checkpoint there and returns ``stopped="SIGINT"`` (or ``"SIGTERM"``), and ``dgm train``
exits with 128 + the signal number (``EXIT_STATUS``: 130, 143), as a shell reports a process that a signal
stopped, so that scripts and schedulers see that the run did not finish. A resumed run continues exactly,
since the checkpoint lies on a step boundary. A second signal, ``REPEAT_WINDOW_S`` or more after the first,
gets the behaviour it had before (Ctrl-C twice: KeyboardInterrupt; SIGTERM twice: the default, termination);
the last checkpoint stays valid whatever moment it lands (``dgm.runs.checkpoint``'s write order). A repeat
sooner than that is the same request delivered twice: under torchrun a terminal's Ctrl-C reaches every
worker directly and once more through the launcher, which forwards it.

Several processes: every process catches the signals, and all stop at the same step boundary
(``ProcessGroup.max_each`` of the signal at the top of each step); rank 0 writes the checkpoint.

Handlers can only be installed in the main thread; elsewhere ``StopSignals`` changes nothing.
"""

from __future__ import annotations

import signal
import threading
import time

__all__ = ["EXIT_STATUS", "StopSignals", "signal_name"]

SIGNALS = (signal.SIGINT, signal.SIGTERM)
REPEAT_WINDOW_S = 2.0  # a signal this soon after the first is the same request (see StopSignals._handle)
EXIT_STATUS = {s.name: 128 + int(s) for s in SIGNALS}  # {"SIGINT": 130, "SIGTERM": 143}


class StopSignals:
    """Context manager: ``received`` is the name of the first SIGINT/SIGTERM since entering ("SIGINT",
    "SIGTERM") or None. The previous handlers come back on exit, and for a second signal."""

    def __init__(self):
        self.received: str | None = None
        self._first = 0.0
        self._previous: dict[int, object] = {}

    @property
    def number(self) -> int:
        """The number of the signal received (2 for SIGINT), or 0."""
        return 0 if self.received is None else int(signal.Signals[self.received])

    def _handle(self, signum, frame):
        now = time.monotonic()
        if self.received is None:
            self.received, self._first = signal.Signals(signum).name, now
            return
        if now - self._first < REPEAT_WINDOW_S:
            return  # the same request, delivered twice: a terminal's Ctrl-C and torchrun's agent forwarding it
        previous = self._previous.get(signum, signal.SIG_DFL)
        signal.signal(signum, previous)  # the second signal: as if dgm had never caught it
        if callable(previous):
            previous(signum, frame)
        else:
            signal.raise_signal(signum)

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                if signal.getsignal(s) is not signal.SIG_IGN:  # an ignored signal (nohup, a background job) stays so
                    self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, previous in self._previous.items():
            signal.signal(s, previous if previous is not None else signal.SIG_DFL)
        self._previous = {}


def signal_name(number: int) -> str:
    """The name of a signal number: 15 -> "SIGTERM"."""
    return signal.Signals(number).name
