"""streamae: exact full-batch sparse autoencoders on data larger than memory.

Layout, from the maths outwards:

- ``_kernels``   Numba kernels: the objective's sums on one chunk of rows
- ``_objective`` parameters, the KL term, assembly of cost and gradient
- ``_data``      the user's data as a row-chunked Dask array
- ``_chunkread`` local Zarr chunks read with one copy, and never a vanished store
- ``_engine``    one evaluation as Dask graphs of kernel tasks + tree reductions
- ``_optim``     full-batch L-BFGS and gradient descent
- ``_options``   `RunOptions`: scheduler, workers and chunking, shared by every method
- ``_validation`` checks of user options (integers, ranges, widths, fitted)
- ``_fitloop``   one training run: optimizer loop, progress, checkpoints, signals
- ``_estimator`` the `SparseAutoencoder` estimator (scikit-learn transformer)
- ``_checkpoint`` exact resume: optimizer state + data fingerprint, written atomically
- ``_cluster``   schedulers: threads, processes, distributed clusters
- ``_progress``  labelled progress of long phases: tqdm bars, or log lines
- ``_images``    images in: built-in photographs, folders of image files, 1/f whitening
- ``_patches``   patches: sampled, normalised, in memory or streamed into Zarr
- ``_import``    arrays imported into Zarr
- ``_whiten``    streaming PCA/ZCA whitening into a new store
- ``_encode``, ``_metrics``  features and metrics out
- ``_plots``     pictures: the filter grid and the training charts
- ``_store``, ``_output``  model groups, and new row-chunked Zarr arrays
- ``_atomic``    atomic local writes (temporary sibling, fsync, rename)
- ``_errors``    the exceptions users see (one-line messages)
- ``cli``        the ``streamae`` command

The public names are imported on first use, so the command's help and
``import streamae`` stay fast.
"""

from typing import TYPE_CHECKING

__version__ = "0.1.0"

# Public names and the private module that defines each. They are imported on
# first use (PEP 562), so that `import streamae.cli` and `streamae --help` do not
# load NumPy, Numba, SciPy or Dask.
_EXPORTS = {
    "CheckpointError": "_errors",
    "TrainingInterrupted": "_errors",
    "ClusterError": "_errors",
    "encode": "_encode",
    "STRATEGIES": "_constants",
    "DataError": "_errors",
    "MemoryBudgetError": "_errors",
    "NumericalError": "_errors",
    "OutputExistsError": "_errors",
    "ParameterError": "_errors",
    "StreamaeError": "_errors",
    "NotFittedError": "_errors",
    "RunOptions": "_options",
    "SparseAutoencoder": "_estimator",
    "import_array": "_import",
    "MetricsLog": "_metrics",
    "reference_cost_and_grad": "_objective",
    "write_patches": "_patches",
    "show": "_plots",
    "whiten": "_whiten",
    "OutputWriteError": "_errors",
    "MissingDependencyError": "_errors",
}


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'streamae' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from ._constants import STRATEGIES
    from ._encode import encode
    from ._errors import (
        CheckpointError,
        ClusterError,
        DataError,
        MemoryBudgetError,
        MissingDependencyError,
        NotFittedError,
        NumericalError,
        OutputExistsError,
        OutputWriteError,
        ParameterError,
        StreamaeError,
        TrainingInterrupted,
    )
    from ._estimator import SparseAutoencoder
    from ._import import import_array
    from ._metrics import MetricsLog
    from ._objective import reference_cost_and_grad
    from ._options import RunOptions
    from ._patches import write_patches
    from ._plots import show
    from ._whiten import whiten


__all__ = [
    "STRATEGIES",
    "CheckpointError",
    "ClusterError",
    "DataError",
    "MetricsLog",
    "MemoryBudgetError",
    "MissingDependencyError",
    "NotFittedError",
    "NumericalError",
    "OutputExistsError",
    "OutputWriteError",
    "ParameterError",
    "RunOptions",
    "SparseAutoencoder",
    "StreamaeError",
    "TrainingInterrupted",
    "encode",
    "import_array",
    "reference_cost_and_grad",
    "show",
    "whiten",
    "write_patches",
    "__version__",
]
