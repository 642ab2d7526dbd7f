"""`RunOptions`: where and how a computation runs, shared by every method.

These options never change a fitted model's numbers beyond the documented
reduction order (``chunk_rows``, ``block_rows`` and ``split_every`` fix the
order of the floating-point additions; the scheduler and the workers never
do), so they are kept apart from the model's hyperparameters.
"""

from dataclasses import dataclass, fields

from ._constants import PAGE_CACHE_MODES
from ._errors import ParameterError
from ._validation import check_int

DEFAULT_BLOCK_ROWS = 512  # rows per kernel block: see docs/benchmarks.md


@dataclass(frozen=True)
class RunOptions:
    """Where and how evaluations and transforms run.

    Parameters
    ----------
    scheduler : str, distributed.Client or cluster, optional
        Where the tasks run: "threads" (default), "synchronous", "processes",
        "distributed" (the current client), a scheduler address such as
        "tcp://10.0.0.5:8786", a ``distributed.Client`` or a cluster object.
        Results are bit-identical on all of them (docs/cluster.md).
    workers : int, optional
        Threads ("threads"), processes ("processes"), or, with no scheduler or
        "distributed", the single-threaded worker processes of a
        ``LocalCluster`` started on 127.0.0.1 for the call and stopped after it.
    chunk_rows : int, optional
        Rows per task; default the store's chunks (see `streamae._data`).
    block_rows : int, default 512
        Rows per kernel block inside a task.
    split_every : int, default 8
        Fan-in of the reduction tree.
    cache_limit : int, optional
        Bytes the "cached" strategy may keep; default half the available memory.
    storage_options : dict, optional
        fsspec options for URLs (endpoint, credentials).
    read_ahead : int, optional
        Reads each task has in flight ahead of the batch its kernels work on
        (0: none); default 2. Memory: ``read_ahead + 1`` reads (a chunk, or 8
        MiB of small chunks) per running task. Results do not depend on it.
    page_cache : {"auto", "direct", "drop", "keep"}, default "auto"
        How a local uncompressed store's chunks use the page cache: "auto"
        reads a store larger than half the memory (it could not stay cached)
        with O_DIRECT and the others through the cache; "direct" always
        reads with O_DIRECT; "drop" reads through the cache and drops the
        pages; "keep" reads through the cache.
        docs/benchmarks.md, "Data larger than memory", compares them.

    Notes
    -----
    Instances are immutable and `copy.deepcopy` returns the instance itself,
    so that ``sklearn.base.clone`` of an estimator keeps a live
    ``distributed.Client`` given as ``scheduler`` (it cannot be copied).
    """

    scheduler: object = None
    workers: int = None
    chunk_rows: int = None
    block_rows: int = DEFAULT_BLOCK_ROWS
    split_every: int = 8
    cache_limit: int = None
    storage_options: dict = None
    read_ahead: int = None
    page_cache: str = "auto"

    def __post_init__(self):
        check_int("workers", self.workers, 1, allow_none=True)
        check_int("chunk_rows", self.chunk_rows, 1, allow_none=True)
        check_int("block_rows", self.block_rows, 1)
        check_int("split_every", self.split_every, 2)
        check_int("cache_limit", self.cache_limit, 0, allow_none=True)
        check_int("read_ahead", self.read_ahead, 0, allow_none=True)
        if self.page_cache not in PAGE_CACHE_MODES:
            raise ParameterError(f"page_cache must be one of {', '.join(PAGE_CACHE_MODES)}, "
                                 f"got {self.page_cache!r}")
        if self.storage_options is not None and not isinstance(self.storage_options, dict):
            raise ParameterError(f"storage_options must be a dict of fsspec options, got "
                                 f"{type(self.storage_options).__name__}")

    def __deepcopy__(self, memo):
        return self

    def replace(self, **changes):
        """A copy with ``changes`` applied (validated)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return RunOptions(**{**values, **changes})


def as_run_options(value):
    """``value`` (None, a dict of `RunOptions` fields, or `RunOptions`) as `RunOptions`."""
    if value is None:
        return RunOptions()
    if isinstance(value, RunOptions):
        return value
    if isinstance(value, dict):
        known = {f.name for f in fields(RunOptions)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ParameterError(f"unknown run option(s) {', '.join(map(repr, unknown))}; "
                                 f"choose from {', '.join(sorted(known))}")
        return RunOptions(**value)
    raise ParameterError(f"run_options must be a RunOptions, a dict or None, got "
                         f"{type(value).__name__}")


def with_legacy_options(run_options, function, **legacy):
    """``run_options`` as `RunOptions`, with the keywords ``function`` took
    before it took ``run_options`` (those not None) applied, each with a
    `FutureWarning` naming its replacement.

    Parameters
    ----------
    run_options : RunOptions, dict or None
    function : str
        The public function's name, for the warning.
    **legacy
        Old keyword arguments (``scheduler``, ``workers``, ``chunk_rows``,
        ``split_every``, ``storage_options``), None when not given.
    """
    import warnings

    given = {k: v for k, v in legacy.items() if v is not None}
    options = as_run_options(run_options)
    if not given:
        return options
    names = ", ".join(f"{k}=..." for k in given)
    warnings.warn(f"{function}({names}) is deprecated and will be removed in the next "
                  f"release; pass run_options={{{', '.join(repr(k) + ': ...' for k in given)}}} "
                  "instead", FutureWarning, stacklevel=3)
    return options.replace(**given)
