"""Stopping a run at an iteration boundary on SIGINT or SIGTERM (`InterruptFlag`)."""

import signal
import sys
import threading


class Stop(Exception):
    """Internal: the interrupt flag was seen between evaluations."""


class InterruptFlag:
    """While active, SIGINT and SIGTERM set ``signum`` instead of stopping at once.

    The training loop checks the flag between evaluations, so the evaluation
    in progress completes and the state is at an iteration boundary. A second
    SIGINT raises KeyboardInterrupt at once (the evaluation in progress is
    abandoned; the state is still the last boundary). Once ``stopping`` is
    set, further signals are ignored so that the checkpoint write completes.
    Handlers are only installed from the main thread; elsewhere the flag stays
    unset. ``fit`` arms the flag before its cluster starts and passes
    `is_set` to `Runner.session`, so a signal during a LocalCluster's
    start-up stops the run without waiting for the workers.
    """

    def __init__(self, active=True):
        self.active = active
        self.signum = None
        self.stopping = False  # set while the interrupt's checkpoint is written
        self._previous = {}

    def __enter__(self):
        if self.active and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        return False

    def _handle(self, signum, frame):
        if self.stopping:
            return  # the checkpoint is being written: let it finish
        if self.signum is not None:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            return
        self.signum = signum
        again = " (Ctrl-C again to stop at once)" if signum == signal.SIGINT else ""
        print(f"\nstreamae: {signal.Signals(signum).name} received: stopping after the "
              f"current evaluation{again}", file=sys.stderr, flush=True)

    def is_set(self):
        """True once a signal arrived."""
        return self.signum is not None

    def check(self):
        """Raise `Stop` if a signal arrived."""
        if self.signum is not None:
            raise Stop
