"""``streamae demo``: the UFLDL sparse-autoencoder exercise on built-in images.

Natural images shipped with scikit-image are whitened with a 1/f filter,
10,000 random 8x8 patches are normalised as the exercise does and written to
a Zarr store, and a 64 -> 25 autoencoder (rho 0.01, beta 3, lambda 1e-4) is
trained with 400 L-BFGS iterations. The result is a model and ``filters.png``.

``streamae photos`` writes the same photographs as JPEG files, a folder of
photos to follow docs/tutorial.md with (`sample_photos`).
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
        raise ParameterError(f"`max_iter` must be >= 0, got {max_iter}")
    if strategy not in STRATEGIES:
        raise ParameterError(f"unknown strategy {strategy!r}; choose one of "
                             f"{', '.join(STRATEGIES)}")
    outputs = [os.path.join(out, name) for name in ("patches.zarr", "model.zarr", "filters.png")]
    taken = [p for p in outputs if os.path.exists(p)]
    if taken and not overwrite:
        raise OutputExistsError(
            f"'{taken[0]}' already exists; choose another `out` directory or pass "
            "`overwrite=True`")
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


#: Photographs shipped in skimage/data (no download): people, animals,
#: objects, textures. Text, logos, masks, microscopy and astronomy are left out.
PHOTOS = ("astronaut", "brick", "camera", "chelsea", "coffee", "coins", "grass", "gravel",
          "motorcycle_left", "rocket")


def sample_photos(folder, overwrite=False, echo=print):
    """Write the photographs bundled with scikit-image into ``folder`` as JPEG files.

    Parameters
    ----------
    folder : str or os.PathLike
        Created if needed.
    overwrite : bool
        Replace photos of the same names; without it an existing one is an error
        (checked before anything is written).
    echo : callable
        Receives one line per photo, ``path: WIDTHxHEIGHT``.

    Returns
    -------
    list of str
        The paths written.
    """
    import numpy as np
    import skimage.data
    import skimage.io
    from PIL import Image

    paths = [os.path.join(os.fspath(folder), f"{name}.jpg") for name in PHOTOS]
    taken = [p for p in paths if os.path.exists(p)]
    if taken and not overwrite:
        raise OutputExistsError(f"'{taken[0]}' already exists; choose another folder or pass "
                                "`overwrite=True`")
    os.makedirs(folder, exist_ok=True)
    data_dir = os.path.dirname(skimage.data.__file__)
    for name, path in zip(PHOTOS, paths):
        source = next(f for f in os.listdir(data_dir) if f.split(".")[0] == name)
        pixels = np.asarray(skimage.io.imread(os.path.join(data_dir, source)))
        if pixels.ndim == 3:
            pixels = pixels[..., :3]  # drop an alpha channel
        Image.fromarray(pixels.astype(np.uint8)).save(path, quality=92)
        echo(f"{path}: {pixels.shape[1]}x{pixels.shape[0]}")
    return paths
