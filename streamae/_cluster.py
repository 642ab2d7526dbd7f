"""Where evaluations run: a local Dask scheduler or a Dask distributed cluster.

A `Runner` turns the user's ``scheduler=`` / ``workers=`` choice into the
calls the engine needs (``compute``, ``persist``, shipping the parameters)
and owns whatever it had to start (a ``distributed.Client`` for an address,
a ``LocalCluster`` for ``workers=N``, a process pool for ``"processes"``).
Everything it starts is stopped when its `session` ends.

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
- Each kernel task reads its own chunk: the chunk-read task and the kernel
  task are fused into one (``optimization.fuse.delayed``), so the chunk is
  read where the kernel runs; on a cluster the data never passes the client.
  (Tasks that stream a Zarr store's chunks read them themselves: the engine
  computes those with ``fuse_reads=False``.)
- The parameters are one key per evaluation: a literal in the graph (sent
  once, fetched by workers from each other), or, above
  ``scatter_threshold`` bytes on a cluster, scattered once and broadcast to
  every worker.
- Only partial sums leave the kernel tasks, reduced in a tree whose shape is
  fixed by chunk index (`streamae._engine.tree_sum`), so results do not depend
  on the scheduler, the number of workers or the completion order.
- BLAS runs single-threaded in every worker (distributed workers, the
  process pool, and the threaded scheduler during a session); worker
  processes also get malloc settings that suit the kernels' temporaries
  (`MALLOC_SETTINGS`).
"""

import contextlib
import functools
import importlib.util
import logging
import multiprocessing
import re
import weakref
from asyncio import CancelledError as AsyncCancelledError
from concurrent.futures import CancelledError, ProcessPoolExecutor

import dask
import numpy as np
from dask.delayed import Delayed
from dask.utils import ensure_dict

from ._errors import DataError, ParameterError, StreamaeError

__all__ = ["ClusterError", "LostInputError", "Runner", "SCATTER_THRESHOLD", "make_runner"]

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


class ClusterError(StreamaeError, RuntimeError):
    """The Dask cluster failed in a way a retry inside the run cannot fix."""


class LostInputError(ClusterError):
    """Every copy of data scattered from the client was lost with its workers.

    The engine submits the evaluation again (scattering anew) when it sees this.
    """


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


def _require_distributed(what):
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise ParameterError(
            f"{what} needs the 'distributed' package; install it with "
            "`pip install streamae[distributed]`") from None


def _is_client(obj):
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
    import dask.array as da

    blocks = array.to_delayed().ravel().tolist()
    values = dask.compute(*blocks, scheduler="synchronous")
    token = dask.base.tokenize(array)
    parts = [da.from_array(v, chunks=v.shape, name=f"streamae-chunk-{token}-{i}")
             for i, v in enumerate(values)]
    return da.concatenate(parts, axis=0)


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
        if workers is not None:
            if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) \
                    or workers < 1:
                raise ParameterError(f"workers must be an integer >= 1, got {workers!r}")
            workers = int(workers)
        self.workers = workers
        self.announce = announce
        self.scatter_threshold = int(scatter_threshold)
        self.client = None
        self.address = None
        self._user_client = None
        self._cluster = None
        self._pool = None
        self._owned = []          # (closer) callables, last first
        self._depth = 0
        self._finalizer = None

        if scheduler is None and workers is None:
            scheduler = "threads"
        if scheduler is None or (isinstance(scheduler, str) and scheduler == "distributed"):
            if workers is None:
                self.kind, self._mode = "distributed", "default-client"
            else:
                self.kind, self._mode = "distributed", "local-cluster"
            _require_distributed("a distributed scheduler")
        elif isinstance(scheduler, str) and scheduler.strip().lower() in LOCAL:
            self.kind = LOCAL[scheduler.strip().lower()]
            self._mode = self.kind
            if self.kind == "synchronous" and workers not in (None, 1):
                raise ParameterError("workers does not apply to the synchronous scheduler, "
                                     "which runs one task at a time")
        elif is_address(scheduler):
            _require_distributed(f"scheduler {scheduler!r}")
            self.kind, self._mode, self.address = "distributed", "address", scheduler.strip()
        elif _is_client(scheduler):
            self.kind, self._mode, self._user_client = "distributed", "client", scheduler
        elif hasattr(scheduler, "scheduler_address"):
            _require_distributed("a cluster object")
            self.kind, self._mode, self._cluster = "distributed", "cluster", scheduler
        else:
            raise ParameterError(f"unknown scheduler {scheduler!r}; use {_SCHEDULER_HELP}")
        if self.kind == "distributed" and workers is not None and self._mode != "local-cluster":
            raise ParameterError(
                "workers starts a local cluster; it cannot be combined with an existing "
                "scheduler or client (size that cluster instead)")

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
    def session(self):
        """Start what is needed, limit BLAS threads locally; stop it all at exit."""
        if self._depth == 0:
            self._open()
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

    def _open(self):
        if self.kind == "processes" and self._pool is None:
            pool = ProcessPoolExecutor(self.workers, mp_context=_mp_context(),
                                       initializer=_init_pool_process)
            self._pool = pool
            self._owned.append(lambda: pool.shutdown(wait=True, cancel_futures=True))
        elif self.kind == "distributed" and self.client is None:
            self._connect()
            if self.announce is not None:
                self.announce(self.describe())
        if self._owned and self._finalizer is None:
            self._finalizer = weakref.finalize(self, _close_all, self._owned)

    def _connect(self):
        from distributed import Client, LocalCluster, default_client

        if self._mode == "client":
            client = self._user_client
        elif self._mode == "default-client":
            try:
                client = default_client()
            except ValueError:
                raise ParameterError(
                    "scheduler 'distributed' needs a running distributed.Client (or pass "
                    "workers=N to start a local cluster, or a scheduler address)") from None
        elif self._mode == "address":
            try:
                client = Client(self.address, set_as_default=False)
            except (OSError, TimeoutError) as exc:
                raise ClusterError(
                    f"cannot connect to the Dask scheduler at {self.address} "
                    f"({type(exc).__name__}: {_first_line(exc)}); start it with "
                    "`dask scheduler` and check the address and port") from None
            self._owned.append(functools.partial(_close_client, client))
        elif self._mode == "cluster":
            client = Client(self._cluster, set_as_default=False)
            self._owned.append(functools.partial(_close_client, client))
        else:  # local-cluster
            cluster = LocalCluster(n_workers=self.workers, threads_per_worker=1,
                                   processes=True, host="127.0.0.1",
                                   dashboard_address="127.0.0.1:0")
            self._owned.append(cluster.close)
            client = Client(cluster, set_as_default=False)
            self._owned.append(functools.partial(_close_client, client))
        self.client = client
        self.address = client.scheduler.address
        try:
            client.register_plugin(_plugin_class()())
        except Exception as exc:  # an older or locked-down cluster: BLAS env is still 1
            if _scheduler_lost(exc):
                raise self._lost(exc) from None
            raise

    def close(self):
        """Stop what this runner started (client, cluster, pool)."""
        owned, self._owned = self._owned, []
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        self.client = None if self._mode != "client" else self.client
        self._pool = None
        _close_all(owned)

    def _ensure_open(self):
        # Used outside a session (e.g. an Evaluator used directly): open
        # lazily; a finalizer stops what was started when the runner goes away.
        if (self.kind == "processes" and self._pool is None) or \
                (self.kind == "distributed" and self.client is None):
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
            if self.kind == "distributed":
                return dask.compute(*objs, scheduler=self.client, optimize_graph=optimize)
            if self.kind == "processes":
                return dask.compute(*objs, scheduler="processes", pool=self._pool,
                                    optimize_graph=optimize)
            return dask.compute(*objs, scheduler=self.kind, num_workers=self.workers,
                                optimize_graph=optimize)

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
            "checkpoint if one was written (--checkpoint-every; see 'When the scheduler "
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
                "(chunk_rows / --chunk-rows), see docs/cluster.md")
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
