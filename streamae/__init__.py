"""streamae: exact full-batch sparse autoencoders on data larger than memory.

Layout, from the maths outwards:

- ``_kernels``   Numba kernels: the objective's sums on one chunk of rows
- ``_objective`` parameters, the KL term, assembly of cost and gradient
- ``_data``      the user's data as a row-chunked Dask array
- ``_chunkread`` local Zarr chunks read with one copy, and never a vanished store
- ``_engine``    one evaluation as Dask graphs of kernel tasks + tree reductions
- ``_optim``     full-batch L-BFGS and gradient descent
- ``_estimator`` the `SparseAutoencoder` estimator
- ``_checkpoint`` exact resume: optimizer state + data fingerprint, written atomically
- ``_cluster``   schedulers: threads, processes, distributed clusters
- ``_progress``  a bar of chunks done within a long pass
- ``_images``, ``_patches``, ``_import``  data in: patches and imports into Zarr
- ``_whiten``    streaming PCA/ZCA whitening into a new store
- ``_encode``, ``_plots``, ``_metrics``  features, pictures and metrics out
- ``cli``        the ``streamae`` command
"""

from ._checkpoint import CheckpointError, TrainingInterrupted
from ._cluster import ClusterError
from ._encode import encode
from ._engine import STRATEGIES
from ._errors import (
    DataError,
    MemoryBudgetError,
    NumericalError,
    OutputExistsError,
    ParameterError,
    StreamaeError,
)
from ._estimator import NotFittedError, SparseAutoencoder
from ._import import import_array
from ._metrics import MetricsLog
from ._objective import reference_cost_and_grad
from ._patches import write_patches
from ._plots import show
from ._store import OutputWriteError
from ._whiten import whiten

__version__ = "0.1.0"

__all__ = [
    "STRATEGIES",
    "CheckpointError",
    "ClusterError",
    "DataError",
    "MetricsLog",
    "MemoryBudgetError",
    "NotFittedError",
    "NumericalError",
    "OutputExistsError",
    "OutputWriteError",
    "ParameterError",
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
