"""Progress within one pass over the data: chunks done out of all.

The fit's bar counts iterations; on a large dataset one iteration is one or
more passes that can take minutes, so a second bar counts the kernel tasks
(one per chunk) of the pass in progress. It appears only when a pass lasts
longer than `DELAY` seconds and disappears when the pass ends. It works with
Dask's local schedulers (threads, synchronous, processes), whose callbacks
see every finished task; on a distributed cluster the dashboard shows the
same (its address is printed when the fit starts).
"""

import contextlib

from dask.callbacks import Callback
from tqdm.auto import tqdm

DELAY = 2.0  # seconds before a pass's bar appears
# Names of the per-chunk tasks (streamae._engine, streamae._metrics).
CHUNK_TASKS = ("_task_", "_moments")


class ChunkBar(Callback):
    """A tqdm bar advanced by every finished per-chunk task of a local Dask compute.

    Parameters
    ----------
    label : str
        What the pass is, e.g. "one-pass" or "two-pass 1/2".
    total : int
        Chunks in the pass.
    """

    def __init__(self, label, total):
        super().__init__()
        self.bar = tqdm(total=total, desc=label, unit="chunk", leave=False, delay=DELAY,
                        dynamic_ncols=True)

    def _posttask(self, key, result, dsk, state, worker_id):
        name = key[0] if isinstance(key, tuple) else key
        if isinstance(name, str) and name.startswith(CHUNK_TASKS):
            self.bar.update(1)

    def close(self):
        self.bar.close()


@contextlib.contextmanager
def chunk_progress(label, total, enabled=True):
    """Show a `ChunkBar` for the local Dask computes inside the block (if ``enabled``)."""
    if not enabled:
        yield
        return
    bar = ChunkBar(label, total)
    try:
        with bar:
            yield
    finally:
        bar.close()
