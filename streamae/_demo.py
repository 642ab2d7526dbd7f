"""``streamae demo``: the UFLDL sparse-autoencoder exercise on built-in images.

Natural images shipped with scikit-image are whitened with a 1/f filter,
10,000 random 8x8 patches are normalised as the exercise does and written to
a Zarr store, and a 64 -> 25 autoencoder (rho 0.01, beta 3, lambda 1e-4) is
trained with 400 L-BFGS iterations. The result is a model and ``filters.png``.
"""

import os
import time
import warnings

from sklearn.exceptions import ConvergenceWarning

from ._engine import STRATEGIES
from ._errors import OutputExistsError, ParameterError
from ._estimator import SparseAutoencoder
from ._patches import demo_patches
from ._plots import save_filters
from ._store import write_array

EXERCISE = dict(n_hidden=25, rho=0.01, beta=3.0, weight_decay=1e-4)


def run_demo(out="streamae-demo", overwrite=False, strategy="one-pass", max_iter=400,
             count=10000, dtype="float32", progress=True, echo=print):
    """Run the exercise end to end; returns the trained model.

    Writes ``out/patches.zarr``, ``out/model.zarr`` and ``out/filters.png``.
    """
    if max_iter < 0:
        raise ParameterError(f"--max-iter must be >= 0, got {max_iter}")
    if strategy not in STRATEGIES:
        raise ParameterError(f"unknown strategy {strategy!r}; choose one of "
                             f"{', '.join(STRATEGIES)}")
    outputs = [os.path.join(out, name) for name in ("patches.zarr", "model.zarr", "filters.png")]
    taken = [p for p in outputs if os.path.exists(p)]
    if taken and not overwrite:
        raise OutputExistsError(
            f"'{taken[0]}' already exists; choose another --out directory or pass --overwrite")
    os.makedirs(out, exist_ok=True)

    t0 = time.perf_counter()
    patches = demo_patches(count=count, patch_size=8, seed=0)
    # Two chunks, so both cores of a small machine share each pass.
    store = write_array(outputs[0], patches.astype(dtype), chunk_rows=-(-count // 2),
                        attrs={"source": "streamae demo: scikit-image photographs, 1/f "
                               "whitened, 8x8 patches, normalised to [0.1, 0.9]"},
                        overwrite=overwrite)
    echo(f"wrote {count} 8x8 patches to {outputs[0]} ({time.perf_counter() - t0:.1f} s)")

    model = SparseAutoencoder(**EXERCISE, strategy=strategy, optimizer="lbfgs",
                              max_iter=max_iter, dtype=dtype, random_state=0, verbose=progress)
    t1 = time.perf_counter()
    with warnings.catch_warnings():  # the summary below gives the stop reason
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(outputs[0])
    seconds = time.perf_counter() - t1
    model.save(outputs[1], overwrite=overwrite)
    save_filters(model.W1_, outputs[2], channels="gray", scale=8)
    last = model.history_[-1]
    echo(f"trained 64 -> 25 ({strategy}, {dtype}) in {seconds:.1f} s: {model.n_iter_} "
         f"iterations, {model.evaluations_} evaluations, cost {last['cost']:.6f}, "
         f"mean rho_hat {last['rho_hat_mean']:.4f} ({model.stop_reason_})")
    echo(f"wrote {outputs[1]} and {outputs[2]}")
    del store
    return model
