"""Set-up of every process that runs streamae's tasks: one BLAS thread, malloc
settings for the kernels' temporaries, the worker plugin that applies them on
a cluster (also after restarts), and the signal mask a local cluster's
processes start with."""

import contextlib
import functools
import signal

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
