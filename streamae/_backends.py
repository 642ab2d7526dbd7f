"""Backends: one small class per way of running the tasks (`_Threads`,
`_Synchronous`, `_Processes`, and the `_Distributed` ones: `_DefaultClient`,
`_Address`, `_UserClient`, `_ClusterObject`, `_LocalCluster`), each starting
what it needs and computing there; `backend_for` picks one for the user's
``scheduler`` / ``workers``."""

import asyncio
import contextlib
import functools
import logging
import multiprocessing
import os
import re
import signal
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import dask
from dask.base import named_schedulers

from ._errors import ClusterError, ParameterError, install_hint
from ._failures import _first_line, _scheduler_lost, quiet_rescheduling
from ._workers import QUIET_WORKER, _init_pool_process, _plugin_class, signals_blocked

LOCAL = {
    "threads": "threads", "threading": "threads",
    "synchronous": "synchronous", "sync": "synchronous", "single-threaded": "synchronous",
    "processes": "processes", "multiprocessing": "processes",
}

_ADDRESS = re.compile(r"^[a-z][a-z0-9+.-]*://\S+$|^[\w.-]+:\d+$", re.IGNORECASE)

_SCHEDULER_HELP = ("threads (default), synchronous, processes, distributed, a scheduler "
                   "address such as tcp://10.0.0.5:8786, or a distributed.Client")


def is_address(text):
    """True for a scheduler address: ``tcp://host:port``, ``host:port``, ``inproc://...``."""
    return isinstance(text, str) and bool(_ADDRESS.match(text.strip()))


def _require_distributed(what):
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise ParameterError(
            f"{what} needs the 'distributed' package; {install_hint('distributed')}") from None


def _is_client(obj):
    if "distributed" not in sys.modules:
        return False  # nothing made a Client: importing distributed would only cost time
    try:
        from distributed import Client
    except ImportError:
        return False
    return isinstance(obj, Client)


# ---------------------------------------------------------------- backends
# One small class per way of running the tasks. A backend is chosen once, in
# `Runner.__init__` (`_backend_for`); it starts what it needs (registering
# how to stop it in ``runner._owned``), computes graphs there, and forgets it
# when the runner closes.

class _Backend:
    """Where tasks run: how to start it and compute there."""

    kind = mode = None

    def __init__(self, runner, scheduler=None):
        self.runner = runner

    @property
    def ready(self):
        """True once started (or when there is nothing to start)."""
        return True

    def start(self, stop=None):
        """Start what is needed; False if ``stop()`` cut the start-up short."""
        return True

    def stopped(self):
        """Forget what `Runner.close` has just stopped."""

    def compute(self, objs, optimize):
        raise NotImplementedError


class _Threads(_Backend):
    """The local threaded scheduler, ``workers`` threads."""

    kind = mode = "threads"

    def compute(self, objs, optimize):
        # The scheduler's function, not its name: a name makes Dask import distributed
        # (a fifth of a second) to look for a client this run does not use.
        return dask.compute(*objs, scheduler=named_schedulers[self.kind],
                            num_workers=self.runner.workers, optimize_graph=optimize)


class _Synchronous(_Threads):
    """One task at a time in the calling thread (debugging)."""

    kind = mode = "synchronous"

    def __init__(self, runner, scheduler=None):
        super().__init__(runner)
        if runner.workers not in (None, 1):
            raise ParameterError("workers does not apply to the synchronous scheduler, "
                                 "which runs one task at a time")


class _Processes(_Backend):
    """A pool of ``workers`` local processes, kept for the whole session."""

    kind = mode = "processes"

    def __init__(self, runner, scheduler=None):
        super().__init__(runner)
        self.pool = None

    @property
    def ready(self):
        return self.pool is not None

    def start(self, stop=None):
        pool = ProcessPoolExecutor(self.runner.workers, mp_context=_mp_context(),
                                   initializer=_init_pool_process)
        self.pool = pool
        self.runner._owned.append(lambda: pool.shutdown(wait=True, cancel_futures=True))
        return True

    def stopped(self):
        self.pool = None

    def compute(self, objs, optimize):
        return dask.compute(*objs, scheduler="processes", pool=self.pool,
                            optimize_graph=optimize)


class _Distributed(_Backend):
    """A ``distributed`` client; subclasses say where it comes from (`connect`)."""

    kind = "distributed"

    @property
    def ready(self):
        return self.runner.client is not None

    def connect(self, stop=None):
        """The client (registering in ``runner._owned`` what must be closed)."""
        raise NotImplementedError

    def workers_up(self, stop=None):
        """Wait for workers being started here; False if ``stop()`` came first."""
        return True

    def start(self, stop=None):
        runner = self.runner
        client = self.connect(stop)
        runner.client = client
        runner.address = client.scheduler.address
        if not self.workers_up(stop):
            return False  # the run is stopping: no need to set up workers
        try:
            client.register_plugin(_plugin_class()())
        except Exception as exc:  # an older or locked-down cluster: BLAS env is still 1
            if _scheduler_lost(exc):
                raise runner._lost(exc) from None
            raise
        return True

    def stopped(self):
        self.runner.client = None

    def compute(self, objs, optimize):
        quiet_rescheduling()
        return dask.compute(*objs, scheduler=self.runner.client, optimize_graph=optimize)


class _DefaultClient(_Distributed):
    """The current default client (``scheduler="distributed"``)."""

    mode = "default-client"

    def connect(self, stop=None):
        from distributed import default_client

        try:
            return default_client()
        except ValueError:
            raise ParameterError(
                "scheduler 'distributed' needs a running distributed.Client (or pass "
                "workers=N to start a local cluster, or a scheduler address)") from None


class _Address(_Distributed):
    """A running scheduler at an address; a client is connected for the session."""

    mode = "address"

    def __init__(self, runner, scheduler=None):
        super().__init__(runner)
        _require_distributed(f"scheduler {scheduler!r}")
        runner.address = scheduler.strip()

    def connect(self, stop=None):
        from distributed import Client

        address = self.runner.address
        try:
            client = Client(address, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise ClusterError(
                f"cannot connect to the Dask scheduler at {address} "
                f"({type(exc).__name__}: {_first_line(exc)}); start it with "
                "`dask scheduler` and check the address and port") from None
        self.runner._owned.append(functools.partial(_close_client, client))
        return client


class _UserClient(_Distributed):
    """A client given by the user: used as is, never closed here."""

    mode = "client"

    def __init__(self, runner, scheduler=None):
        super().__init__(runner)
        self.client = scheduler

    def connect(self, stop=None):
        return self.client

    def stopped(self):
        pass  # the user's client stays the runner's


class _ClusterObject(_Distributed):
    """A cluster object (``LocalCluster``, ``SSHCluster``...): a client for the session."""

    mode = "cluster"

    def __init__(self, runner, scheduler=None):
        super().__init__(runner)
        _require_distributed("a cluster object")
        self.cluster = scheduler

    def connect(self, stop=None):
        from distributed import Client

        client = Client(self.cluster, set_as_default=False)
        self.runner._owned.append(functools.partial(_close_client, client))
        return client


class _LocalCluster(_Distributed):
    """A LocalCluster of ``workers`` single-threaded worker processes, for the session.

    The cluster's IO thread is started with SIGINT and SIGTERM blocked, so
    the worker processes it spawns (now and after restarts) ignore the
    terminal's Ctrl-C and a SIGTERM sent to the process group: only this
    process decides when the run stops, and it stops them. Their own log
    lines are off (`QUIET_WORKER`): streamae reports what fails.
    """

    mode = "local-cluster"

    def __init__(self, runner, scheduler=None):
        super().__init__(runner)
        self.cluster = None
        self.starting = None  # the workers' start-up, a concurrent.futures.Future

    def connect(self, stop=None):
        from distributed import Client, LocalCluster

        owned = self.runner._owned
        with signals_blocked():
            cluster = LocalCluster(n_workers=0, threads_per_worker=1, processes=True,
                                   host="127.0.0.1", dashboard_address="127.0.0.1:0",
                                   preload=[QUIET_WORKER])
        self.cluster = cluster
        owned.append(functools.partial(_close_quietly, cluster))
        client = Client(cluster, set_as_default=False)
        owned.append(functools.partial(_close_client, client))
        self.starting = _add_workers(cluster, self.runner.workers)
        return client

    def workers_up(self, stop=None):
        """Wait until the workers are up (True), or until ``stop()`` is true
        (False: a signal during start-up; the run stops without them)."""
        n, starting = self.runner.workers, self.starting
        while not starting.done() or _cluster_size(self.runner.client)[0] < n:
            if stop is not None and stop():
                return False
            if starting.done() and starting.exception() is not None:
                exc = starting.exception()
                raise ClusterError(
                    f"the local cluster's worker processes failed to start "
                    f"({type(exc).__name__}: {_first_line(exc)}); check that this machine "
                    f"can start {n} more Python processes (memory, process limits)")
            time.sleep(0.05)
        return True

    def stopped(self):
        super().stopped()
        self.cluster = self.starting = None


def backend_for(scheduler, workers):
    """The backend class for the ``scheduler`` / ``workers`` choice."""
    if scheduler is None or (isinstance(scheduler, str) and scheduler == "distributed"):
        _require_distributed("a distributed scheduler")
        return _DefaultClient if workers is None else _LocalCluster
    if isinstance(scheduler, str) and scheduler.strip().lower() in LOCAL:
        return {"threads": _Threads, "synchronous": _Synchronous,
                "processes": _Processes}[LOCAL[scheduler.strip().lower()]]
    if is_address(scheduler):
        return _Address
    if _is_client(scheduler):
        return _UserClient
    if hasattr(scheduler, "scheduler_address"):
        return _ClusterObject
    raise ParameterError(f"unknown scheduler {scheduler!r}; use {_SCHEDULER_HELP}")


def _cluster_size(client):
    """(workers, threads) of the client's cluster, without listing every worker."""
    import inspect

    if "n_workers" in inspect.signature(client.scheduler_info).parameters:
        info = client.scheduler_info(n_workers=0)
        if "n_workers" in info:
            return info["n_workers"], info.get("total_threads", 0)
    workers = client.scheduler_info().get("workers", {})
    return len(workers), sum(w.get("nthreads", 0) for w in workers.values())


def _mp_context():
    return multiprocessing.get_context(dask.config.get("multiprocessing.context", "spawn"))


def _close_client(client):
    """Close a client; quietly if its scheduler is gone (distributed would log
    the cancelled reconnection as an error with a traceback)."""
    if client.status == "running":
        client.close()
        return
    logger = logging.getLogger("distributed.client")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        client.close(timeout=5)
    finally:
        logger.setLevel(level)


def _add_workers(cluster, n):
    """Start ``n`` workers in ``cluster`` (a LocalCluster) from its IO thread.

    Like ``cluster.scale(n)``, but the start-up's outcome is a
    concurrent.futures.Future held by the caller: a start-up that fails, or
    is cut short by `_kill_starting_workers`, is not logged with a traceback
    by tornado as an unobserved callback error.
    """
    while len(cluster.worker_spec) < n:
        cluster.worker_spec.update(cluster.new_worker_spec())

    async def correct_state():
        await cluster._correct_state()

    return asyncio.run_coroutine_threadsafe(correct_state(), cluster.loop.asyncio_loop)


def _close_quietly(cluster):
    """Close a LocalCluster started here without distributed's log lines.

    Its workers are asked to stop and killed if they take longer than a few
    seconds (a task still running, a loaded machine); distributed logs that,
    and the workers' lost connections, as warnings and errors that say nothing
    the user can act on once the run has ended. A close that fails is left at
    that: the worker processes end with this process (distributed's nannies
    make them exit when their parent does).
    """
    logger = logging.getLogger("distributed")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        _kill_starting_workers(cluster)
        cluster.close()
    except Exception:  # e.g. a timeout on a loaded machine: the run's outcome stands,
        pass           # and the worker processes exit with this process at the latest
    finally:
        logger.setLevel(level)


def _kill_starting_workers(cluster):
    """SIGKILL the worker processes that have not finished starting.

    Closing waits for the start-up in progress, and a worker still importing
    cannot be asked to stop: a run stopped during start-up would wait for
    both. Such a process holds nothing yet.
    """
    for nanny in list(getattr(cluster, "_created", ())):
        worker = getattr(nanny, "process", None)  # distributed.nanny.WorkerProcess
        process = getattr(worker, "process", None)
        if str(getattr(worker, "status", "")).endswith("starting") and process is not None \
                and process.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, getattr(signal, "SIGKILL", signal.SIGTERM))


def _close_all(closers):
    errors = []
    for close in reversed(closers):
        try:
            close()
        except Exception as exc:  # keep closing the rest
            errors.append(exc)
    closers.clear()
    if errors:
        raise errors[0]
