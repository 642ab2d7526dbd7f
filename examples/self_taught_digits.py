"""Self-taught learning on scikit-learn's 8x8 digits (docs/self-taught.md).

The UFLDL self-taught learning exercise, in small: a sparse autoencoder
learns features from *unlabelled* images of the digits 5-9; a logistic
regression then classifies the digits 0-4 from those features, trained on
a few labelled images. It is compared with the same classifier on the raw
pixels, and on both together. Last, the autoencoder's n_hidden and rho are
tuned by ``GridSearchCV`` in a ``Pipeline`` with the classifier, trained on
the labelled images alone.

    pip install streamae
    python examples/self_taught_digits.py [--out self-taught-digits] [--hidden 100]

Every step goes through streamae's stores: .npy -> ``import_array`` (scale
recorded) -> ``SparseAutoencoder.fit`` -> ``encode`` -> scikit-learn.
Takes about two minutes on two cores.
"""

import argparse
import os
import time
import warnings

import numpy as np
import zarr
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from streamae import SparseAutoencoder, encode, import_array, show

SIZES = (10, 25, 50, "all")  # labelled training images per class
GRID = {"sparseautoencoder__n_hidden": [50, 100], "sparseautoencoder__rho": [0.05, 0.1]}
REPEATS = 20  # random draws of the labelled subset per size
# The UFLDL self-taught exercise's settings (784 -> 200 there).
AE = dict(rho=0.1, beta=3.0, weight_decay=3e-3)


def column_major(images):
    """(n, 8, 8) -> (n, 64), each image flattened column-major like streamae's patches,
    so that `streamae show` draws the filters upright."""
    return images.transpose(0, 2, 1).reshape(len(images), -1)


def classifier():
    # C chosen by 3-fold cross-validation on the labelled training images only.
    search = GridSearchCV(LogisticRegression(max_iter=5000),
                          {"C": [0.01, 0.1, 1.0, 10.0, 100.0]}, cv=3)
    return make_pipeline(StandardScaler(), search)


def accuracy(train_X, train_y, test_X, test_y):
    model = classifier().fit(train_X, train_y)
    return float((model.predict(test_X) == test_y).mean())


def subsets(y, per_class, rng):
    """Indices of ``per_class`` random examples of each class."""
    return np.concatenate([rng.choice(np.flatnonzero(y == c), per_class, replace=False)
                           for c in np.unique(y)])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="self-taught-digits", help="working directory")
    parser.add_argument("--hidden", type=int, default=100, help="hidden units (default 100)")
    parser.add_argument("--rho", type=float, default=AE["rho"])
    parser.add_argument("--beta", type=float, default=AE["beta"])
    parser.add_argument("--weight-decay", type=float, default=AE["weight_decay"])
    parser.add_argument("--max-iter", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=REPEATS,
                        help=f"labelled training sets drawn per size (default {REPEATS})")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    hyper = dict(rho=args.rho, beta=args.beta, weight_decay=args.weight_decay)
    os.makedirs(args.out, exist_ok=True)
    path = lambda name: os.path.join(args.out, name)  # noqa: E731

    digits = load_digits()
    X = column_major(digits.images)  # values 0..16
    y = digits.target
    unlabelled = y >= 5
    np.save(path("unlabelled.npy"), X[unlabelled])
    np.save(path("labelled.npy"), X[~unlabelled])
    yl = y[~unlabelled]
    print(f"{unlabelled.sum()} unlabelled images (digits 5-9), {len(yl)} labelled (digits 0-4)")

    # Unlabelled pixels scaled into [0, 1] by their overall min and max (0 and 16);
    # the labelled images are brought to the same scale with --scale-from.
    import_array(path("unlabelled.npy"), path("unlabelled.zarr"), scale="minmax-all",
                 overwrite=True)
    import_array(path("labelled.npy"), path("labelled.zarr"),
                 scale_from=path("unlabelled.zarr"), overwrite=True)

    t0 = time.perf_counter()
    ae = SparseAutoencoder(n_hidden=args.hidden, **hyper, max_iter=args.max_iter,
                           dtype="float64", random_state=args.seed)
    with warnings.catch_warnings():  # the line below says whether it converged
        warnings.simplefilter("ignore", ConvergenceWarning)
        ae.fit(path("unlabelled.zarr"))
    ae.save(path("model.zarr"), overwrite=True)
    last = ae.history_[-1]
    print(f"autoencoder 64 -> {args.hidden} (rho {args.rho}, beta {args.beta}, lambda "
          f"{args.weight_decay}): {ae.n_iter_} L-BFGS iterations in "
          f"{time.perf_counter() - t0:.1f} s ({ae.stop_reason_}), cost {last['cost']:.4f}, "
          f"explained variance {last['explained_variance']:.3f}, {last['dead_units']} dead "
          "units")
    show(path("model.zarr"), path("pictures"), overwrite=True)

    encode(ae, path("labelled.zarr"), path("features.zarr"), overwrite=True)
    pixels = zarr.open_array(path("labelled.zarr"))[...]
    features = zarr.open_array(path("features.zarr"))[...]
    both = np.hstack([pixels, features])

    # Half of each labelled class for testing, fixed; training subsets drawn from the rest.
    rng = np.random.default_rng(args.seed)
    test = np.concatenate([rng.permutation(np.flatnonzero(yl == c))[: (yl == c).sum() // 2]
                           for c in np.unique(yl)])
    pool = np.setdiff1d(np.arange(len(yl)), test)
    inputs = {"raw pixels (64)": pixels, f"autoencoder features ({args.hidden})": features,
              f"pixels + features ({64 + args.hidden})": both}
    print(f"\ntest set: {len(test)} images of digits 0-4; accuracy, mean +/- std over "
          f"{args.repeats} random labelled training sets\n")
    print("| labelled images per class | " + " | ".join(inputs) + " |")
    print("|---|" + "---|" * len(inputs))
    for size in SIZES:
        scores = {name: [] for name in inputs}
        for _ in range(1 if size == "all" else args.repeats):
            train = pool if size == "all" else pool[subsets(yl[pool], size, rng)]
            for name, data in inputs.items():
                scores[name].append(accuracy(data[train], yl[train], data[test], yl[test]))
        label = f"all ({len(pool) // 5} on average)" if size == "all" else str(size)
        cells = [f"{np.mean(s):.3f}" + (f" +/- {np.std(s):.3f}" if len(s) > 1 else "")
                 for s in scores.values()]
        print(f"| {label} | " + " | ".join(cells) + " |")

    grid_search(pixels, yl, pool, test, args)


def grid_search(pixels, y, pool, test, args):
    """n_hidden and rho of an autoencoder trained, inside a Pipeline, on the
    labelled training images themselves (no unlabelled data), chosen by
    3-fold cross-validated accuracy; scored on the same test set as above."""
    pipe = make_pipeline(
        SparseAutoencoder(beta=args.beta, weight_decay=1e-4, max_iter=200, dtype="float64",
                          random_state=args.seed),
        StandardScaler(), LogisticRegression(max_iter=5000))
    search = GridSearchCV(pipe, GRID, cv=3)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        search.fit(pixels[pool], y[pool])
    seconds = time.perf_counter() - t0
    print(f"\nGridSearchCV over {GRID} (lambda 1e-4, 200 iterations), autoencoder + "
          f"logistic regression trained on the {len(pool)} labelled training images, 3-fold "
          f"cross-validation: {len(search.cv_results_['params']) * 3 + 1} fits in "
          f"{seconds:.0f} s\n")
    print("| n_hidden | rho | cross-validated accuracy | rank |")
    print("|---|---|---|---|")
    results = search.cv_results_
    for params, mean, std, rank in zip(results["params"], results["mean_test_score"],
                                       results["std_test_score"], results["rank_test_score"]):
        print(f"| {params['sparseautoencoder__n_hidden']} | {params['sparseautoencoder__rho']} "
              f"| {mean:.3f} +/- {std:.3f} | {rank} |")
    best = search.best_params_
    tuned = search.score(pixels[test], y[test])
    pixels_only = accuracy(pixels[pool], y[pool], pixels[test], y[test])
    print(f"\nbest: n_hidden {best['sparseautoencoder__n_hidden']}, rho "
          f"{best['sparseautoencoder__rho']}; test accuracy {tuned:.3f} (raw pixels with the "
          f"same training images: {pixels_only:.3f})")


if __name__ == "__main__":
    main()
