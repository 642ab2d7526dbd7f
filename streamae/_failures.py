"""Failure classification: what a cluster's exceptions mean to a run.

A worker lost with its results is recomputed by the cluster (its warning is
not shown: `quiet_rescheduling`); a task whose workers all died is a
`ClusterError` naming memory as the usual cause; scattered inputs lost with
every worker that held them are a `LostInputError` (the evaluation is
submitted again); a lost scheduler, a worker denied or not finding the data,
each one line naming the fix (`translate`).
"""

import logging
from asyncio import CancelledError as AsyncCancelledError
from concurrent.futures import CancelledError

import dask

from ._errors import ClusterError, DataError, LostInputError


class _Rescheduling(logging.Filter):
    """Drops distributed's warning that a result was lost with its worker and is
    being recomputed: the cluster recomputes it and the evaluation's result is
    the same, so the line says nothing the user can act on."""

    def filter(self, record):
        return not str(record.msg).startswith("Couldn't gather")


def quiet_rescheduling():
    """Install `_Rescheduling` on distributed's client logger (once)."""
    logger = logging.getLogger("distributed.client")
    if not any(isinstance(f, _Rescheduling) for f in logger.filters):
        logger.addFilter(_Rescheduling())


def _killed_count():
    return dask.config.get("distributed.scheduler.allowed-failures", 3) + 1


_CANCELLED = (CancelledError, AsyncCancelledError)
_LOST_INPUT_REASONS = ("already forgotten", "lost dependencies")


def _cancel_reasons(exc):
    groups = getattr(exc, "error_groups", None)
    if groups:
        return {str(g.reason) for g in groups}
    return {str(getattr(exc, "reason", "") or "")}


def _lost_input(exc):
    return isinstance(exc, _CANCELLED) and \
        bool(_cancel_reasons(exc) & set(_LOST_INPUT_REASONS))


def _scheduler_lost(exc):
    """The client lost its scheduler (killed, network, closed client)."""
    try:
        from distributed.comm.core import CommClosedError
    except ImportError:  # pragma: no cover
        CommClosedError = ()
    if isinstance(exc, CommClosedError):
        return True
    if isinstance(exc, _CANCELLED):
        return not _lost_input(exc)
    text = str(exc)
    return isinstance(exc, (OSError, RuntimeError)) and (
        "scheduler" in text.lower() or ("Client" in text and "closed" in text))


def _first_line(exc):
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def lost_scheduler(address, exc):
    """The `ClusterError` for a lost scheduler (at ``address``, or None)."""
    where = f" at {address}" if address else ""
    reason = exc if isinstance(exc, str) else f"{type(exc).__name__}: {_first_line(exc)}"
    return ClusterError(
        f"lost the Dask scheduler{where} ({reason}); "
        "the run stopped: start a scheduler and run again, resuming from the last "
        "checkpoint if one was written (`checkpoint_every`; see 'When the scheduler "
        "dies' in docs/cluster.md)")


def translate(exc, address=None):
    """A one-line streamae error for a failure on a distributed cluster, or None
    to re-raise ``exc`` as it is."""
    try:
        from distributed import KilledWorker
    except ImportError:  # pragma: no cover
        return None
    if isinstance(exc, KilledWorker):
        return ClusterError(
            f"a task was running on {_killed_count()} workers that all died "
            f"({_first_line(exc)}); a worker dying on every attempt usually means it "
            "ran out of memory: give workers more memory or use smaller chunks "
            "(`chunk_rows`), see docs/cluster.md")
    if _lost_input(exc):
        return LostInputError(
            "every worker holding the scattered parameters was lost and the evaluation "
            f"was submitted three times ({_first_line(exc)}); check the workers' logs "
            "for why they die")
    if _scheduler_lost(exc):
        return lost_scheduler(address, exc)
    if isinstance(exc, PermissionError):
        return DataError(
            f"a Dask worker was denied access to the data ({_first_line(exc)}); the "
            "workers need the same credentials as this machine (set them in the "
            "workers' environment), see docs/cluster.md")
    if isinstance(exc, FileNotFoundError):
        return DataError(
            f"a Dask worker cannot find the data ({_first_line(exc)}); every worker must "
            "see the store at the same path or URL (use a shared file system or an "
            "object store), see docs/cluster.md")
    return None
