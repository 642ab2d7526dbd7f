"""Which decoder and which scaling for real-valued tabular data: the worked
example of docs/decoders.md.

The breast-cancer measurements bundled with scikit-learn (569 tumours x 30
real-valued features in very different units; nothing is downloaded) are
split into training and test rows, scaled four ways, and each scaling gets
the decoder it calls for; a logistic regression on the hidden features then
predicts the diagnosis of the test rows:

- min-max into [0, 1] per column, sigmoid decoder (``clip=True``: test rows
  outside the training range are clipped);
- standardised (mean 0, variance 1 per column), linear decoder;
- standardised, then ZCA-whitened by ``streamae.whiten`` with epsilon 1,
  0.1 and 0.01, linear decoder (``streamae.encode`` whitens the test rows
  with the training rows' transform).

Prints one line per case (``--results FILE`` also writes them as JSON):

    python examples/decoder_and_scaling.py
"""

import argparse
import json
import os
import tempfile
import warnings

import zarr
from sklearn.datasets import load_breast_cancer
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import MinMaxScaler, StandardScaler

from streamae import SparseAutoencoder, encode, whiten

MODEL = dict(n_hidden=40, rho=0.05, beta=3.0, weight_decay=1e-4, dtype="float64",
             random_state=0)


def _accuracy(H_train, y_train, H_test, y_test):
    classifier = LogisticRegression(max_iter=5000).fit(H_train, y_train)
    return float(classifier.score(H_test, y_test))


def _store(path, X):
    z = zarr.create_array(path, shape=X.shape, chunks=(len(X), X.shape[1]), dtype="f8")
    z[...] = X
    return path


def _fit(X, max_iter, **params):
    with warnings.catch_warnings():  # max_iter ends these fits: the table says how far
        warnings.simplefilter("ignore", ConvergenceWarning)
        return SparseAutoencoder(**MODEL, max_iter=max_iter, **params).fit(X)


def cases(max_iter, folder):
    """(name, explained variance on the training rows, test accuracy) per case."""
    X, y = load_breast_cancer(return_X_y=True)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.3, random_state=0,
                                              stratify=y)
    std = StandardScaler().fit(X_tr)
    S_tr, S_te = std.transform(X_tr), std.transform(X_te)
    yield "no autoencoder: standardised features", None, _accuracy(S_tr, y_tr, S_te, y_te)

    minmax = MinMaxScaler().fit(X_tr)
    M_tr, M_te = minmax.transform(X_tr), minmax.transform(X_te)
    ae = _fit(M_tr, max_iter, clip=True)
    yield ("min-max + sigmoid decoder", ae.history_[-1]["explained_variance"],
           _accuracy(ae.transform(M_tr), y_tr, ae.transform(M_te), y_te))

    ae = _fit(S_tr, max_iter, decoder="linear")
    yield ("standardised + linear decoder", ae.history_[-1]["explained_variance"],
           _accuracy(ae.transform(S_tr), y_tr, ae.transform(S_te), y_te))

    raw = _store(os.path.join(folder, "train.zarr"), S_tr)
    for epsilon in (1.0, 0.1, 0.01):
        white = os.path.join(folder, f"white-{epsilon:g}.zarr")
        whiten(raw, white, kind="zca", epsilon=epsilon)
        ae = _fit(white, max_iter, decoder="linear")
        H_tr = encode(ae, S_tr, os.path.join(folder, f"h-train-{epsilon:g}.zarr"))[...]
        H_te = encode(ae, S_te, os.path.join(folder, f"h-test-{epsilon:g}.zarr"))[...]
        yield (f"standardised, ZCA epsilon {epsilon:g} + linear decoder",
               ae.history_[-1]["explained_variance"], _accuracy(H_tr, y_tr, H_te, y_te))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-iter", type=int, default=300, help="L-BFGS iterations per fit")
    parser.add_argument("--results", default=None, help="JSON file to write the table to")
    args = parser.parse_args()
    print(f"breast cancer, 398 training / 171 test rows x 30 features; "
          f"{MODEL['n_hidden']} hidden units, rho {MODEL['rho']}, {args.max_iter} iterations")
    print(f"{'case':<50} {'explained variance':>18} {'test accuracy':>13}")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name, ev, accuracy in cases(args.max_iter, folder):
            shown = "-" if ev is None else f"{ev:.3f}"
            print(f"{name:<50} {shown:>18} {accuracy:>13.3f}")
            rows.append({"case": name, "explained_variance": ev, "test_accuracy": accuracy})
    if args.results:
        with open(args.results, "w") as f:
            json.dump({"max_iter": args.max_iter, "model": MODEL, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
