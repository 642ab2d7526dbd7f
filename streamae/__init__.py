"""streamae: exact full-batch sparse autoencoders on data larger than memory.

Layout, from the maths outwards:

- ``_kernels``   Numba kernels: the objective's sums on one chunk of rows
- ``_objective`` parameters, the KL term, assembly of cost and gradient
- ``_data``      the user's data as a row-chunked Dask array
- ``_engine``    one evaluation as Dask graphs of kernel tasks + tree reductions
- ``_optim``     full-batch L-BFGS and gradient descent
- ``_estimator`` the `SparseAutoencoder` estimator
- ``cli``        the ``streamae`` command
"""

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
from ._objective import reference_cost_and_grad

__version__ = "0.1.0"

__all__ = [
    "STRATEGIES",
    "DataError",
    "MemoryBudgetError",
    "NotFittedError",
    "NumericalError",
    "OutputExistsError",
    "ParameterError",
    "SparseAutoencoder",
    "StreamaeError",
    "reference_cost_and_grad",
    "__version__",
]
