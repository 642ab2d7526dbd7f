"""Progress of long phases, in one style for the library and every command.

Each long phase has a label ("compiling kernels", "data variance",
"fit one-pass", "one-pass", "import", ...). On a terminal (or in a notebook)
it is a tqdm bar; when stderr is anything else (a log file, a pipe) it is
plain lines, ``streamae: LABEL: 120/400 it (30%), 61.2 s``, at most one every
`LOG_EVERY` seconds and one when the phase ends, with no carriage returns or
cursor escapes.

Three kinds of bars:

- `bar`: counted by the caller (the fit's iterations).
- `chunk_progress`: the kernel tasks (each a run of chunks) of one pass over
  the data in a local Dask compute, counted in tasks. On a large dataset one
  iteration is one or more passes that can take minutes; the bar appears only
  when a pass lasts longer than `DELAY` seconds and disappears when it ends.
  On a distributed cluster the dashboard shows the same (its address is
  printed when the fit starts).
- `task_progress`: every task of the local Dask computes inside a block (the
  ``patches``, ``import`` and ``encode`` commands).

Totals come from the graphs being computed (the tasks a bar counts, in every
compute inside its block), so a count never passes its total and a bar's
unit is what it counts. Each bar ends with one final line.

`phase` labels a step that cannot be counted (compiling the kernels).
"""

import contextlib
import sys
import time

DELAY = 2.0  # seconds before a pass's bar appears
LOG_EVERY = 10.0  # seconds between two log lines of one phase
# Names of the kernel tasks of every pass (`streamae._passes`).
CHUNK_TASKS = ("_task_",)


def interactive():
    """True if bars can be redrawn: stderr is a terminal, or this is a notebook."""
    from tqdm.auto import tqdm

    if "notebook" in tqdm.__module__:
        return True
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def bar(label, total=None, unit="it", *, enabled=True, initial=0, leave=True, delay=0.0):
    """A progress bar for a phase of ``total`` steps: tqdm, or log lines (module notes).

    Parameters
    ----------
    label : str
        What the phase is.
    total : int, optional
        Steps in the phase; None if unknown.
    unit : str
        What a step is ("it", "chunk", "task").
    enabled : bool
        False gives a bar that shows nothing.
    initial : int
        Steps already done (a resumed fit).
    leave : bool
        Keep the finished bar on a terminal.
    delay : float
        Show nothing for a phase that ends within this many seconds.

    Returns
    -------
    tqdm.tqdm or LogBar
        Both have ``update``, ``set_postfix``, ``close`` and are context managers.
    """
    if enabled and interactive():
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=label, unit=unit, initial=initial, leave=leave,
                    delay=delay, dynamic_ncols=True)
    return LogBar(label, total, unit, initial=initial, delay=delay, enabled=enabled)


class LogBar:
    """Progress as plain lines on stderr, for logs (same calls as a tqdm bar).

    Parameters
    ----------
    label, total, unit, initial, delay, enabled
        As `bar`.
    """

    def __init__(self, label, total=None, unit="it", *, initial=0, delay=0.0, enabled=True):
        self.label, self.total, self.unit = label, total, unit
        self.n = initial
        self.delay = delay
        self.disable = not enabled
        self.postfix = ""
        self.start = self.last = time.monotonic()
        self.closed = False

    def update(self, n=1):
        self.n += n
        now = time.monotonic()
        if now - self.last >= LOG_EVERY and now - self.start >= self.delay:
            self._line(now)

    def set_postfix(self, refresh=True, **values):
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def close(self, final=True):
        """End the phase: one last line if it lasted at least ``delay`` seconds."""
        if self.closed:
            return
        self.closed = True
        now = time.monotonic()
        if final and now - self.start >= self.delay:
            self._line(now, done=True)

    def _line(self, now, done=False):
        self.last = now
        if self.disable:
            return
        if self.total:
            n = min(self.n, self.total)
            count = f"{n}/{self.total} {self.unit} ({100 * n / self.total:.0f}%)"
        elif self.n:
            count = f"{self.n} {self.unit}"
        else:
            count = "done" if done else "running"
        extra = f", {self.postfix}" if self.postfix else ""
        print(f"streamae: {self.label}: {count}, {now - self.start:.1f} s{extra}",
              file=sys.stderr, flush=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close(final=exc_type is None)  # an error says what happened instead


@contextlib.contextmanager
def phase(label, enabled=True, delay=0.0):
    """Label a step that cannot be counted for as long as the block runs."""
    with bar(label, None, enabled=enabled, leave=False, delay=delay):
        yield


def _dask_callback():
    from dask.callbacks import Callback

    return Callback


class _TaskCounter:
    """A Dask callback (local schedulers) that advances ``progress`` per finished task.

    Parameters
    ----------
    progress : tqdm.tqdm or LogBar
        Its total grows, at the start of each compute inside the block, by the
        tasks of that compute this counter will count.
    prefixes : tuple of str, optional
        Count only the tasks whose key name starts with one of these; a compute
        with no such task (a pass written another way) has each of its tasks
        counted. None: every task.
    """

    def __init__(self, progress, prefixes=None):
        self.progress = progress
        self.prefixes = prefixes
        self.counted = None  # key-name predicate of the compute under way
        self.callback = _dask_callback()(start_state=self._start_state, posttask=self._posttask)

    def _start_state(self, dsk, state):
        todo = list(state["ready"]) + list(state["waiting"])
        matching = [k for k in todo if self._matches(k)] if self.prefixes else []
        self.counted = self._matches if matching else None
        self.progress.total = (self.progress.total or 0) + len(matching or todo)
        if hasattr(self.progress, "refresh"):
            self.progress.refresh()

    def _matches(self, key):
        name = key[0] if isinstance(key, tuple) else key
        return isinstance(name, str) and name.startswith(self.prefixes)

    def _posttask(self, key, result, dsk, state, worker_id):
        if self.counted is None or self.counted(key):
            self.progress.update(1)


@contextlib.contextmanager
def chunk_progress(label, total=None, enabled=True):
    """Show the kernel tasks done by the local Dask computes inside the block (if
    ``enabled``), in tasks.

    The bar appears after `DELAY` seconds and disappears when the block ends.
    """
    if not enabled:
        yield
        return
    # ``total`` (the tasks the caller expects) is a first guess: the graphs set it.
    del total
    with bar(label, None, "task", leave=False, delay=DELAY) as progress:
        with _TaskCounter(progress, CHUNK_TASKS).callback:
            yield


@contextlib.contextmanager
def task_progress(label, enabled=True, delay=1.0):
    """Show the tasks done by the local Dask computes inside the block (if ``enabled``)."""
    if not enabled:
        yield
        return
    with bar(label, None, "task", delay=delay) as progress:
        with _TaskCounter(progress).callback:
            yield
