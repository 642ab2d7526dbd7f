"""Training metrics in history_ and the JSON-lines file, checked against an
independent NumPy evaluation at the recorded weights."""

import json

import numpy as np
import pytest
from helpers import sigmoid
from numpy.testing import assert_allclose

from streamae import SparseAutoencoder
from streamae._metrics import (
    MetricsLog,
    metrics_path,
    read_metrics,
    unit_counts,
    unit_thresholds,
)
from streamae._objective import reference_cost_and_grad


def _expected(model, X):
    """Every metric of a record, from NumPy at the model's weights."""
    W1, b1, W2, b2 = (model.params_[k] for k in ("W1", "b1", "W2", "b2"))
    a2 = sigmoid(X @ W1.T + b1)
    a3 = sigmoid(a2 @ W2.T + b2)
    m = X.shape[0]
    rho, beta, lam = model.rho, model.beta, model.weight_decay
    rho_hat = a2.mean(axis=0)
    sse = np.sum((a3 - X) ** 2)
    kl = np.sum(rho * np.log(rho / rho_hat) + (1 - rho) * np.log((1 - rho) / (1 - rho_hat)))
    cost, grad = reference_cost_and_grad(X, model.params_, model.hyper)
    low, high = unit_thresholds(rho)
    return {
        "cost": cost,
        "reconstruction": 0.5 * sse / m,
        "weight_decay": 0.5 * lam * (np.sum(W1 ** 2) + np.sum(W2 ** 2)),
        "sparsity": beta * kl,
        "grad_norm": np.sqrt(sum(np.sum(g ** 2) for g in grad.values())),
        "rho_hat_min": rho_hat.min(), "rho_hat_mean": rho_hat.mean(),
        "rho_hat_max": rho_hat.max(),
        "dead_units": int(np.sum(rho_hat < low)),
        "saturated_units": int(np.sum(rho_hat > high)),
        "explained_variance": 1 - sse / np.sum((X - X.mean(axis=0)) ** 2),
    }


def _check(record, expected):
    for key, value in expected.items():
        assert record[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key


@pytest.mark.parametrize("strategy, chunk_rows", [("one-pass", 97), ("two-pass", 500)])
def test_history_matches_numpy_at_recorded_weights(rng, strategy, chunk_rows):
    X = rng.uniform(0, 1, size=(500, 16))
    kw = dict(n_hidden=6, rho=0.05, beta=3.0, weight_decay=1e-3, dtype="float64",
              random_state=3, strategy=strategy, run_options={"chunk_rows": chunk_rows})
    start = SparseAutoencoder(**kw, max_iter=0).fit(X)
    assert len(start.history_) == 1
    _check(start.history_[0], _expected(start, X))

    model = SparseAutoencoder(**kw, max_iter=8).fit(X)
    last = model.history_[-1]
    assert last["iteration"] == model.n_iter_
    _check(last, _expected(model, X))
    # The same numbers as the estimator's own evaluation at those weights.
    cost, grad = model.set_params(strategy="two-pass", run_options=None).cost_and_grad(X)
    assert last["cost"] == pytest.approx(cost, rel=1e-12)
    assert last["grad_norm"] == pytest.approx(
        np.sqrt(sum(np.sum(g ** 2) for g in grad.values())), rel=1e-9)
    assert_allclose(model.rho_hat_, sigmoid(X @ model.W1_.T + model.b1_).mean(axis=0))
    # Bookkeeping fields.
    for earlier, later in zip(model.history_[:-1], model.history_[1:], strict=True):
        assert later["iteration"] == earlier["iteration"] + 1
        assert later["seconds"] >= earlier["seconds"]
        assert later["evaluations"] > earlier["evaluations"]
        assert later["step"] > 0 and later["samples_per_s"] > 0
        assert later["cost"] <= earlier["cost"]
        assert later["cost"] == pytest.approx(
            later["reconstruction"] + later["weight_decay"] + later["sparsity"], rel=1e-12)


def test_dead_and_saturated_thresholds():
    assert unit_thresholds(0.01) == pytest.approx((0.001, 0.1))
    assert unit_thresholds(0.1) == pytest.approx((0.01, 0.55))
    assert unit_counts([0.0005, 0.001, 0.01, 0.1, 0.2, 0.9], 0.01) == (1, 2)


def test_jsonl_written_on_save_and_streamed(rng, tmp_path):
    X = rng.uniform(0, 1, size=(200, 9))
    log = MetricsLog(tmp_path / "live.jsonl")
    model = SparseAutoencoder(n_hidden=4, rho=0.1, dtype="float64", max_iter=4).fit(
        X, callback=log)
    model.save(tmp_path / "model.zarr")
    path = tmp_path / "model.metrics.jsonl"
    assert metrics_path(tmp_path / "model.zarr") == str(path)
    lines = path.read_text().splitlines()
    assert len(lines) == len(model.history_) == model.n_iter_ + 1
    records = [json.loads(line) for line in lines]  # strict JSON, one record per line
    assert records == read_metrics(tmp_path / "model.zarr")
    for record, expected in zip(records, model.history_, strict=True):
        assert record == pytest.approx(expected)
    assert [json.loads(line) for line in (tmp_path / "live.jsonl").read_text().splitlines()] \
        == records
    assert SparseAutoencoder.load(tmp_path / "model.zarr").history_ == records
