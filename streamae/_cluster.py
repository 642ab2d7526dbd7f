"""Where evaluations run: a local Dask scheduler or a Dask distributed cluster.

A `Runner` turns the user's ``scheduler=`` / ``workers=`` choice into the
calls the passes need (``compute``, ``persist``, shipping the parameters)
and owns whatever it had to start (a ``distributed.Client`` for an address,
a ``LocalCluster`` for ``workers=N``, a process pool for ``"processes"``).
Everything it starts is stopped when its `session` ends. Around it:
`streamae._backends` (one small class per way of running tasks, which
starts what it needs and computes there), `streamae._workers` (what every
worker process sets up) and `streamae._failures` (what a cluster's
exceptions mean, in one line each).

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

import contextlib
import importlib.util
import sys
import weakref
from asyncio import CancelledError as AsyncCancelledError

import dask
import numpy as np
from dask.delayed import Delayed
from dask.utils import ensure_dict

from ._backends import _close_all, _cluster_size, backend_for, is_address
from ._errors import ParameterError, StreamaeError
from ._failures import lost_scheduler, translate
from ._validation import check_int

__all__ = ["Runner", "SCATTER_THRESHOLD", "is_address", "make_runner"]

#: Parameters at least this large (bytes) are scattered on a cluster.
SCATTER_THRESHOLD = 2**20

#: Scattered parameters are broadcast to every worker while that costs at
#: most this many bytes in all (the scheduler sends each copy); beyond, they
#: go to one worker and the others fetch them from each other.
BROADCAST_BUDGET = 2**30

#: In-memory data embedded in the graph above this size is shipped once per
#: session (split into one literal per chunk, persisted on a cluster).
EMBEDDED_THRESHOLD = 2**20


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
        self._backend = backend_for(scheduler, workers)(self, scheduler)
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
        return lost_scheduler(self.address, exc)

    def _translate(self, exc):
        """A one-line streamae error for a cluster failure, or None to re-raise."""
        if self.kind != "distributed":
            return None
        return translate(exc, self.address)


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


def make_runner(scheduler=None, workers=None, announce=None,
                scatter_threshold=SCATTER_THRESHOLD):
    """A `Runner` for ``scheduler`` (returned unchanged if it is one already)."""
    if isinstance(scheduler, Runner):
        if workers is not None:
            raise ParameterError("workers cannot be combined with an existing Runner")
        return scheduler
    return Runner(scheduler, workers, announce, scatter_threshold)
