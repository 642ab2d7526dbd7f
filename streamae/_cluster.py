"""Where evaluations run: a local Dask scheduler or a Dask distributed cluster.

A `Runner` turns the user's ``scheduler=`` / ``workers=`` choice into the
calls the engine needs (``compute``, ``persist``, shipping the parameters)
and owns whatever it had to start (a ``distributed.Client`` for an address,
a ``LocalCluster`` for ``workers=N``, a process pool for ``"processes"``).
Everything it starts is stopped when its `session` ends. Each way of running
tasks is one small backend class (`_Threads`, `_Synchronous`, `_Processes`,
and the `_Distributed` ones: `_DefaultClient`, `_Address`, `_UserClient`,
`_ClusterObject`, `_LocalCluster`) that starts what it needs and computes there.

Accepted schedulers
-------------------
``None`` / ``"threads"``
    The local threaded scheduler (default); ``workers`` sets the threads.
``"synchronous"``
    One task at a time in the calling thread (debugging).
``"processes"``
    A pool of local worker processes, kept for the whole session (a new
    pool per evaluation would re-import NumPy and Numba every time);
    ``workers`` sets its size.
``"tcp://host:port"`` (or ``"host:port"``, or any ``scheme://`` address)
    A running ``distributed`` scheduler; a client is connected for the session.
``distributed.Client``
    Used as is, never closed here.
a cluster object (``LocalCluster``, ``SSHCluster``, ...)
    A client is connected to it for the session.
``"distributed"``
    The current default ``distributed`` client; with ``workers=N``, a new
    ``LocalCluster`` of N single-threaded worker processes on 127.0.0.1.

How the work is shipped (see docs/cluster.md)
---------------------------------------------
- Data is read where the kernels run; on a cluster it never passes the
  client. The evaluator's tasks take runs of chunks (a Zarr store's they
  read themselves) and are computed with ``fuse_reads=False``; in the other
  graphs (encoding, metrics) each chunk-read task is fused into its kernel
  task (``optimization.fuse.delayed``).
- The parameters are one key per evaluation: a literal in the graph (sent
  once, fetched by workers from each other), or, above
  ``scatter_threshold`` bytes on a cluster, scattered once and broadcast to
  every worker.
- Only partial sums leave the kernel tasks, reduced in a tree whose shape is
  fixed by chunk index (`streamae._engine.reduce_runs`), so results do not
  depend on the scheduler, the number of workers or the completion order.
- BLAS runs single-threaded in every worker (distributed workers, the
  process pool, and the threaded scheduler during a session); worker
  processes also get malloc settings that suit the kernels' temporaries
  (`MALLOC_SETTINGS`).
"""

import asyncio
import contextlib
import functools
import importlib.util
import logging
import multiprocessing
import os
import re
import signal
import sys
import time
import weakref
from asyncio import CancelledError as AsyncCancelledError
from concurrent.futures import CancelledError, ProcessPoolExecutor

import dask
import numpy as np
from dask.base import named_schedulers
from dask.delayed import Delayed
from dask.utils import ensure_dict

from ._errors import (
    ClusterError,
    DataError,
    LostInputError,
    ParameterError,
    StreamaeError,
    install_hint,
)
from ._validation import check_int

__all__ = ["Runner", "SCATTER_THRESHOLD", "make_runner"]

#: Parameters at least this large (bytes) are scattered on a cluster.
SCATTER_THRESHOLD = 2**20

#: Scattered parameters are broadcast to every worker while that costs at
#: most this many bytes in all (the scheduler sends each copy); beyond, they
#: go to one worker and the others fetch them from each other.
BROADCAST_BUDGET = 2**30

#: In-memory data embedded in the graph above this size is shipped once per
#: session (split into one literal per chunk, persisted on a cluster).
EMBEDDED_THRESHOLD = 2**20

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


# ---------------------------------------------------------------- worker set-up
# Module-level so that they pickle by reference into worker processes.

def limit_blas_threads():
    """One BLAS thread in this process (for the rest of its life)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


#: glibc malloc settings for worker processes: allocations up to 32 MiB (the
#: most glibc allows) come from the heap, and up to 256 MiB of freed heap is
#: kept for reuse. distributed's nannies set MALLOC_TRIM_THRESHOLD_=65536,
#: which also switches off glibc's adaptive mmap threshold, so every kernel
#: temporary over 128 KiB becomes a fresh mmap, page-faulted and zeroed:
#: measured, kernel tasks ran ~40% slower than in the threaded scheduler.
MALLOC_SETTINGS = {"M_MMAP_THRESHOLD": 32 * 2**20, "M_TRIM_THRESHOLD": 256 * 2**20}
_MALLOPT = {"M_TRIM_THRESHOLD": -1, "M_MMAP_THRESHOLD": -3}


def tune_malloc():
    """Apply `MALLOC_SETTINGS` in this process (glibc only; else nothing)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return all(mallopt(_MALLOPT[k], int(v)) == 1 for k, v in MALLOC_SETTINGS.items())


def setup_worker_process():
    """What every process that runs streamae tasks does once: one BLAS thread
    (bit-identical results), and malloc settings for its temporaries."""
    limit_blas_threads()
    tune_malloc()


def _init_pool_process():
    from dask.multiprocessing import initialize_worker_process

    initialize_worker_process(user_initializer=setup_worker_process)


@functools.cache
def _plugin_class():
    from distributed.diagnostics.plugin import WorkerPlugin

    class WorkerSetup(WorkerPlugin):
        """Worker plugin: `setup_worker_process` in every worker, also after restarts."""

        name = "streamae-worker-setup"
        idempotent = True

        def setup(self, worker):
            setup_worker_process()

    WorkerSetup.__module__ = __name__
    WorkerSetup.__qualname__ = "WorkerSetup"
    return WorkerSetup


def __getattr__(name):
    # The plugin class needs distributed; create it on first use so that
    # importing streamae does not import distributed.
    if name == "WorkerSetup":
        return _plugin_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: The signals a terminal (Ctrl-C) or a job scheduler (SIGTERM) sends to the
#: whole foreground process group.
GROUP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})


#: Worker preload (Python source) of a LocalCluster started by streamae: the
#: worker process logs nothing below CRITICAL. Its warnings and errors
#: (tasks that failed, a heartbeat lost while the cluster closes) are
#: reported by streamae in its own one-line errors, or are of no use.
QUIET_WORKER = ("import logging\n"
                "logging.getLogger('distributed').setLevel(logging.CRITICAL)\n")


@contextlib.contextmanager
def signals_blocked(signals=GROUP_SIGNALS):
    """Block ``signals`` in the calling thread for the duration of the block.

    Threads started meanwhile inherit the blocked mask, and so do the
    processes they spawn (the mask survives fork and exec, and Python does
    not unblock it). A LocalCluster started in this block therefore has IO
    threads and worker processes that a signal to the process group does not
    reach: the worker processes neither die with KeyboardInterrupt nor lose
    the evaluation in progress; they stop when the cluster is closed (the
    nanny asks them to, and kills them if they do not). A signal that arrives
    during the block stays pending and is handled when it ends. (CPython
    starts multiprocessing's resource tracker the same way.)
    """
    if not hasattr(signal, "pthread_sigmask"):  # Windows: no process groups to protect from
        yield
        return
    # Starting multiprocessing's resource tracker unblocks SIGINT and SIGTERM
    # in the thread that starts it (it blocks them around its own spawn): start
    # it first, so that it does not undo the mask of a later spawn.
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


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


def _nbytes(value):
    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, dict):
        return sum(_nbytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_nbytes(v) for v in value)
    return 0


def embedded_bytes(array):
    """Bytes of NumPy data embedded as literals in a Dask array's graph."""
    total = 0
    for value in ensure_dict(array.__dask_graph__()).values():
        inner = getattr(value, "value", None)  # dask._task_spec.DataNode
        if isinstance(inner, np.ndarray):
            total += inner.nbytes
        elif isinstance(value, np.ndarray):
            total += value.nbytes
    return total


def _split_literals(array):
    """The same array with one literal per row chunk (views of in-memory data)."""
    from ._data import array_of_blocks

    blocks = array.to_delayed().ravel().tolist()
    values = dask.compute(*blocks, scheduler="synchronous")
    return array_of_blocks(list(values), name=f"streamae-chunk-{dask.base.tokenize(array)}")


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
        _quiet_rescheduling()
        return dask.compute(*objs, scheduler=self.runner.client, optimize_graph=optimize)


class _Rescheduling(logging.Filter):
    """Drops distributed's warning that a result was lost with its worker and is
    being recomputed: the cluster recomputes it and the evaluation's result is
    the same, so the line says nothing the user can act on."""

    def filter(self, record):
        return not str(record.msg).startswith("Couldn't gather")


def _quiet_rescheduling():
    """Install `_Rescheduling` on distributed's client logger (once)."""
    logger = logging.getLogger("distributed.client")
    if not any(isinstance(f, _Rescheduling) for f in logger.filters):
        logger.addFilter(_Rescheduling())


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


def _backend_for(scheduler, workers):
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


class Runner:
    """Runs the engine's graphs on the chosen scheduler.

    Parameters
    ----------
    scheduler : None, str, distributed.Client or cluster object
        See the module docstring.
    workers : int, optional
        Threads (``"threads"``), processes (``"processes"``) or a new
        LocalCluster's worker processes (``None`` or ``"distributed"``).
    announce : callable, optional
        Called with one line (the cluster and its dashboard link) when a
        cluster is used.
    scatter_threshold : int
        Parameters of at least this many bytes are scattered and broadcast
        on a cluster instead of travelling inside the graph.
    """

    def __init__(self, scheduler=None, workers=None, announce=None,
                 scatter_threshold=SCATTER_THRESHOLD):
        if isinstance(scheduler, Runner):
            raise ParameterError("pass the scheduler itself, not a Runner")
        workers = check_int("workers", workers, 1, allow_none=True)
        self.workers = workers
        self.announce = announce
        self.scatter_threshold = int(scatter_threshold)
        self.client = None
        self.address = None
        self._owned = []          # (closer) callables, last first
        self._depth = 0
        self._finalizer = None
        if scheduler is None and workers is None:
            scheduler = "threads"
        self._backend = _backend_for(scheduler, workers)(self, scheduler)
        self.kind = self._backend.kind
        self._mode = self._backend.mode
        if self.kind == "distributed" and workers is not None and self._mode != "local-cluster":
            raise ParameterError(
                "workers starts a local cluster; it cannot be combined with an existing "
                "scheduler or client (size that cluster instead)")

    @property
    def _pool(self):
        """The process pool of the ``"processes"`` scheduler while it is open."""
        return getattr(self._backend, "pool", None)

    # ------------------------------------------------------------ description
    @property
    def is_distributed(self):
        return self.kind == "distributed"

    @property
    def dashboard_link(self):
        """The dashboard URL of the cluster, or None."""
        if self.client is None:
            return None
        try:
            return self.client.dashboard_link
        except Exception:  # no dashboard service
            return None

    def describe(self):
        """One line: the scheduler, its workers and dashboard."""
        if self.client is None:
            n = self.workers or "default"
            return f"Dask {self.kind} scheduler ({n} workers)"
        workers, threads = _cluster_size(self.client)
        line = f"Dask cluster {self.client.scheduler.address}: {workers} workers, {threads} threads"
        link = self.dashboard_link
        if link:
            line += f"; dashboard {link}"
            if self._mode == "local-cluster" and importlib.util.find_spec("bokeh") is None:
                line += " (install bokeh to see it)"
        return line

    # ------------------------------------------------------------ lifecycle
    @contextlib.contextmanager
    def session(self, stop=None):
        """Start what is needed, limit BLAS threads locally; stop it all at exit.

        Parameters
        ----------
        stop : callable, optional
            Polled while a new LocalCluster's workers start; once it returns
            True the session begins without waiting for them (the caller is
            about to stop, e.g. on Ctrl-C).
        """
        if self._depth == 0:
            self._open(stop)
        self._depth += 1
        try:
            if self.kind in ("threads", "synchronous"):
                from threadpoolctl import threadpool_limits

                with threadpool_limits(limits=1, user_api="blas"):
                    yield self
            else:
                yield self
        finally:
            self._depth -= 1
            if self._depth == 0:
                self.close()

    def _open(self, stop=None):
        try:
            self._start(stop)
        except BaseException:
            self.close()  # e.g. Ctrl-C while the cluster started: stop what did start
            raise

    def _start(self, stop=None):
        if not self._backend.ready:
            ready = self._backend.start(stop)
            if ready and self.is_distributed and self.announce is not None:
                self.announce(self.describe())
        if self._owned and self._finalizer is None:
            self._finalizer = weakref.finalize(self, _close_all, self._owned)

    def close(self):
        """Stop what this runner started (client, cluster, pool)."""
        owned, self._owned = self._owned, []
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        self._backend.stopped()
        _close_all(owned)

    def _ensure_open(self):
        # Used outside a session (e.g. an Evaluator used directly): open
        # lazily; a finalizer stops what was started when the runner goes away.
        if not self._backend.ready:
            self._open()

    # ------------------------------------------------------------ work
    def compute(self, *objs, fuse_reads=True):
        """``dask.compute`` on this scheduler, chunk reads fused into their kernel
        tasks (unless ``fuse_reads`` is False: tasks that read their own data)."""
        self._ensure_open()
        if len(objs) > 1 and all(isinstance(o, Delayed) for o in objs):
            # One root: dask's delayed fusion cannot take several output keys.
            (values,) = self._compute(dask.delayed(_pack, pure=True)(*objs),
                                      fuse_reads=fuse_reads)
            return values
        return self._compute(*objs, fuse_reads=fuse_reads)

    def _check_connected(self):
        """Fail fast if the client has lost its scheduler (it would otherwise wait
        for a reconnection until its connect timeout, 30 s by default)."""
        if self.kind == "distributed" and self.client.status != "running":
            raise self._lost(f"the connection to it was lost; client {self.client.status}")

    def _compute(self, *objs, fuse_reads=True):
        self._check_connected()
        optimize = True
        if not fuse_reads:
            optimize = False
        elif len(objs) == 1 and isinstance(objs[0], Delayed) and not (
                self.kind == "distributed" and _holds_futures(objs)):
            objs, optimize = (fuse_chunk_reads(objs[0]),), False
        with self._translated_errors():
            return self._backend.compute(objs, optimize)

    @contextlib.contextmanager
    def _translated_errors(self):
        """Turn cluster failures into one-line streamae errors (others pass through)."""
        try:
            yield
        except StreamaeError:
            raise
        except (Exception, AsyncCancelledError) as exc:
            error = self._translate(exc)
            if error is None:
                raise
            raise error from None

    def persist(self, *objs, fuse_reads=True):
        """Delayed objects whose values are computed (kept on the workers on a cluster)."""
        self._ensure_open()
        if self.kind != "distributed":
            # Computed values become literal keys (DataNode), which graph
            # fusion handles (a persisted tuple would not be).
            return tuple(dask.delayed(v, traverse=False)
                         for v in self.compute(*objs, fuse_reads=fuse_reads))
        # No fusion here: futures (persisted data) cannot be fused.
        # The chunk-read tasks run on the workers all the same.
        self._check_connected()
        with self._translated_errors():
            return dask.persist(*objs, scheduler=self.client)

    def put(self, value):
        """One graph key holding ``value`` (the parameters) for this evaluation.

        On a cluster, values of at least ``scatter_threshold`` bytes are
        scattered once and broadcast to every worker (up to
        ``BROADCAST_BUDGET`` bytes in all; beyond, workers fetch them from
        each other); smaller ones are one literal in the graph. Tasks take
        the returned object as an argument.
        """
        self._ensure_open()
        if self.kind == "distributed" and _nbytes(value) >= self.scatter_threshold:
            self._check_connected()
            try:
                workers = max(1, _cluster_size(self.client)[0])
                broadcast = _nbytes(value) * workers <= BROADCAST_BUDGET
                [future] = self.client.scatter([value], broadcast=broadcast, hash=False,
                                               direct=False)
            except (Exception, AsyncCancelledError) as exc:
                error = self._translate(exc)
                if error is None:
                    raise
                raise error from None
            return future
        return dask.delayed(value, pure=True)

    def prepare(self, array):
        """The data as this scheduler should read it.

        Zarr- or file-backed arrays are returned unchanged: every task reads
        its own chunk where it runs. In-memory data embedded in the graph
        (above ``EMBEDDED_THRESHOLD``) is split into one literal per chunk
        so that a task ships only its chunk; on a cluster it is then
        persisted, so it crosses the network once per session, not once per
        evaluation.
        """
        if self.kind not in ("processes", "distributed"):
            return array
        if embedded_bytes(array) < EMBEDDED_THRESHOLD:
            return array
        array = _split_literals(array)
        if self.kind == "distributed":
            (array,) = self.persist(array)
        return array

    # ------------------------------------------------------------ errors
    def _lost(self, exc):
        where = f" at {self.address}" if self.address else ""
        reason = exc if isinstance(exc, str) else f"{type(exc).__name__}: {_first_line(exc)}"
        return ClusterError(
            f"lost the Dask scheduler{where} ({reason}); "
            "the run stopped: start a scheduler and run again, resuming from the last "
            "checkpoint if one was written (`checkpoint_every`; see 'When the scheduler "
            "dies' in docs/cluster.md)")

    def _translate(self, exc):
        """A one-line streamae error for a cluster failure, or None to re-raise."""
        if self.kind != "distributed":
            return None
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
            return self._lost(exc)
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


def fuse_chunk_reads(obj):
    """``obj`` (a Delayed) with every chunk read fused into the task that uses it.

    A *read* is a task whose only inputs are literal data (such as the
    ``zarr.Array`` handle) and which has exactly one dependent: the kernel
    task of its chunk. Fused, the kernel task reads its own chunk where it
    runs, so a chunk never travels between processes (dask's own linear
    fusion skips these reads because the kernel also takes the parameters).
    """
    from dask._task_spec import DataNode, GraphNode, Task, convert_legacy_graph, cull
    from dask.core import reverse_dict

    # (HighLevelGraph.cull is O(layers x keys); one flat cull is O(keys).)
    dsk = cull(convert_legacy_graph(ensure_dict(obj.__dask_graph__())), [obj.key])
    dependencies = {k: set(v.dependencies) for k, v in dsk.items()}
    dependents = reverse_dict(dependencies)
    reads = {}
    for key, node in dsk.items():
        if key == obj.key or not isinstance(node, Task) or len(dependents[key]) != 1:
            continue
        if all(isinstance(dsk.get(d), DataNode) for d in dependencies[key]):
            (user,) = dependents[key]
            if isinstance(dsk.get(user), Task):
                reads.setdefault(user, []).append(key)
    for user, keys in reads.items():
        dsk[user] = GraphNode.fuse(*(dsk.pop(k) for k in keys), dsk[user], key=user)
    return Delayed(obj.key, dsk)


def _pack(*parts):
    return parts


def _holds_futures(objs):
    if "distributed" not in sys.modules:
        return False  # no Future can exist
    from distributed import Future

    for obj in objs:
        if isinstance(obj, Delayed) and any(isinstance(v, Future)
                                            for v in ensure_dict(obj.__dask_graph__()).values()):
            return True
    return False


def _cluster_size(client):
    """(workers, threads) of the client's cluster, without listing every worker."""
    import inspect

    if "n_workers" in inspect.signature(client.scheduler_info).parameters:
        info = client.scheduler_info(n_workers=0)
        if "n_workers" in info:
            return info["n_workers"], info.get("total_threads", 0)
    workers = client.scheduler_info().get("workers", {})
    return len(workers), sum(w.get("nthreads", 0) for w in workers.values())


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


def make_runner(scheduler=None, workers=None, announce=None,
                scatter_threshold=SCATTER_THRESHOLD):
    """A `Runner` for ``scheduler`` (returned unchanged if it is one already)."""
    if isinstance(scheduler, Runner):
        if workers is not None:
            raise ParameterError("workers cannot be combined with an existing Runner")
        return scheduler
    return Runner(scheduler, workers, announce, scatter_threshold)
