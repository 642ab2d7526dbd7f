"""The SparseAutoencoder estimator: fit, determinism, transform, save/load,
from_weights, and the one-line errors of the public API."""

import numpy as np
import pytest
import zarr
from numpy.testing import assert_allclose, assert_array_equal

from streamae import (
    STRATEGIES,
    DataError,
    MemoryBudgetError,
    NotFittedError,
    OutputExistsError,
    ParameterError,
    SparseAutoencoder,
    StreamaeError,
)
from streamae._objective import PARAM_NAMES, init_params

OPTIMIZERS = ["lbfgs", "gd"]


@pytest.fixture
def data(rng):
    """200 rows x 16 features in [0.1, 0.9], as the exercise's patches are."""
    return rng.uniform(0.1, 0.9, size=(200, 16))


def new_model(hyper_kw, dtype="float64", seed=1, n_hidden=6):
    return SparseAutoencoder(n_hidden=n_hidden, **hyper_kw, dtype=dtype, random_state=seed)


def fit(model, X, strategy="one-pass", optimizer="lbfgs", max_iter=8, callback=None, **run):
    run.setdefault("chunk_rows", 64)  # 64, 64, 64, 8: several chunks, uneven last
    model.set_params(strategy=strategy, optimizer=optimizer, max_iter=max_iter,
                     run_options=run)
    return model.fit(X, callback=callback)


def weights(model):
    return {k: getattr(model, k + "_") for k in PARAM_NAMES}


def assert_bit_identical(a, b):
    for k in PARAM_NAMES:
        assert_array_equal(a[k], b[k], strict=True, err_msg=k)


# ----------------------------------------------------------------- fit

@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_fit_lowers_the_cost(strategy, optimizer, data, hyper_kw):
    model = new_model(hyper_kw)
    assert fit(model, data, strategy, optimizer) is model
    costs = np.array([r["cost"] for r in model.history_])
    # Every accepted step satisfies the Armijo condition: strictly decreasing.
    assert np.all(np.diff(costs) < 0)
    # Measured: 8.66 -> 0.44 (L-BFGS and GD alike) in 8 iterations.
    assert costs[-1] < 0.1 * costs[0]
    assert model.n_iter_ == 8 == len(model.history_) - 1
    assert model.stop_reason_
    assert model.W1_.shape == (6, 16) and model.W2_.shape == (16, 6)
    assert all(getattr(model, k + "_").dtype == np.float64 for k in PARAM_NAMES)


def test_history_records(data, hyper_kw):
    model = fit(new_model(hyper_kw), data, max_iter=5)
    assert [r["iteration"] for r in model.history_] == list(range(6))
    evaluations = [r["evaluations"] for r in model.history_]
    assert evaluations[0] == 1 and np.all(np.diff(evaluations) >= 1)
    assert evaluations[-1] == model.evaluations_
    for r in model.history_:
        terms = r["reconstruction"] + r["weight_decay"] + r["sparsity"]
        assert r["cost"] == pytest.approx(terms, rel=1e-12)
        assert r["rho_hat_min"] <= r["rho_hat_mean"] <= r["rho_hat_max"]
        assert r["grad_norm"] > 0 and r["seconds"] >= 0


def test_history_matches_the_returned_weights(data, hyper_kw):
    """The last record is the cost at W1_..b2_, and rho_hat_ their mean activation."""
    for strategy in STRATEGIES:
        model = fit(new_model(hyper_kw), data, strategy, max_iter=5)
        cost, grad = model.cost_and_grad(data)  # the fit's strategy and chunks
        assert cost == model.history_[-1]["cost"]  # same arithmetic: bit-identical
        assert np.linalg.norm(np.concatenate([g.ravel() for g in grad.values()])) == \
            pytest.approx(model.history_[-1]["grad_norm"], rel=1e-12)
        assert_allclose(model.rho_hat_, model.transform(data).mean(axis=0), rtol=1e-12)


def test_fit_max_iter_zero_keeps_the_initial_weights(data, hyper_kw):
    model = fit(new_model(hyper_kw, seed=7), data, max_iter=0)
    init = init_params(16, 6, np.random.default_rng(7))
    assert_bit_identical(weights(model), init)
    assert len(model.history_) == 1 and model.n_iter_ == 0


def test_fit_callback_can_stop(data, hyper_kw):
    seen = []

    def callback(model, record):
        seen.append(record["iteration"])
        return record["iteration"] == 2

    model = fit(new_model(hyper_kw), data, max_iter=8, callback=callback)
    assert seen == [1, 2] and model.n_iter_ == 2


# ----------------------------------------------------------------- determinism

@pytest.mark.parametrize("strategy", STRATEGIES)
def test_same_strategy_twice_and_across_schedulers_is_bit_identical(strategy, data, hyper_kw):
    runs = [fit(new_model(hyper_kw, dtype="float32"), data, strategy, max_iter=5,
                scheduler=sched)
            for sched in ("threads", "threads", "synchronous")]
    for other in runs[1:]:
        assert_bit_identical(weights(other), weights(runs[0]))
        assert [r["cost"] for r in other.history_] == [r["cost"] for r in runs[0].history_]


def test_strategies_train_to_the_same_weights_up_to_rounding(data, hyper_kw):
    """Not bit-identical (the one-pass sums round differently), but the same
    optimisation path: measured max |dW| <= 1e-15 after 5 float64 iterations."""
    fits = [weights(fit(new_model(hyper_kw), data, s, max_iter=5)) for s in STRATEGIES]
    for other in fits[1:]:
        for k in PARAM_NAMES:
            assert_allclose(other[k], fits[0][k], rtol=0, atol=1e-9, err_msg=k)


def test_different_seeds_differ(data, hyper_kw):
    a = fit(new_model(hyper_kw, seed=1), data, max_iter=0)
    b = fit(new_model(hyper_kw, seed=2), data, max_iter=0)
    assert not np.array_equal(a.W1_, b.W1_)


# ----------------------------------------------------------------- transform

@pytest.mark.parametrize("dtype, atol", [("float64", 1e-14), ("float32", 1e-6)])
def test_transform_is_the_sigmoid_hidden_layer(dtype, atol, data, make_problem, hyper_kw,
                                               write_zarr):
    # float32: measured max |error| 4e-8 (activations are in (0, 1)).
    _, params = make_problem(10, 16, 6)
    model = SparseAutoencoder.from_weights(**params, **hyper_kw, dtype=dtype)
    expected = 1.0 / (1.0 + np.exp(-(data @ params["W1"].T + params["b1"])))
    for source, run in ((data, {"chunk_rows": 64}), (write_zarr(data, 48), {})):
        H = model.set_params(run_options=run).transform(source)
        assert H.shape == (200, 6) and H.dtype == np.dtype(dtype)
        assert_allclose(H, expected, rtol=0, atol=atol)


# ----------------------------------------------------------------- save / load

def test_save_load_round_trip(tmp_path, data, hyper_kw):
    model = fit(new_model(hyper_kw, dtype="float32", seed=3), data, "two-pass", max_iter=4)
    path = tmp_path / "model.zarr"
    model.save(path)
    loaded = SparseAutoencoder.load(path)
    assert_bit_identical(weights(loaded), weights(model))
    for attr in ("n_hidden", "rho", "beta", "weight_decay", "dtype", "random_state", "n_iter_",
                 "stop_reason_", "history_", "evaluations_", "strategy_", "guard_events_"):
        assert getattr(loaded, attr) == getattr(model, attr), attr
    assert_array_equal(loaded.rho_hat_, model.rho_hat_, strict=True)
    # The loaded model computes exactly what the trained one does.
    cost, grad = loaded.set_params(strategy="two-pass", run_options={"chunk_rows": 64}) \
        .cost_and_grad(data)
    cost0, grad0 = model.cost_and_grad(data)
    assert cost == cost0
    assert_bit_identical(grad, grad0)


def test_save_refuses_to_replace_without_overwrite(tmp_path, data, hyper_kw):
    path = tmp_path / "model.zarr"
    first = fit(new_model(hyper_kw, seed=1), data, max_iter=0)
    first.save(path)
    second = fit(new_model(hyper_kw, seed=2), data, max_iter=0)
    with pytest.raises(OutputExistsError) as info:
        second.save(path)
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg and "overwrite" in msg
    assert_bit_identical(weights(SparseAutoencoder.load(path)), weights(first))
    second.save(path, overwrite=True)
    assert_bit_identical(weights(SparseAutoencoder.load(path)), weights(second))


def test_load_errors(tmp_path, write_zarr, data):
    with pytest.raises(DataError, match="does not exist"):
        SparseAutoencoder.load(tmp_path / "nothing.zarr")
    not_a_model = write_zarr(data, 50)
    with pytest.raises(DataError, match="not a streamae model") as info:
        SparseAutoencoder.load(not_a_model)
    assert "\n" not in str(info.value)


def test_loaded_model_refuses_data_of_another_width(tmp_path, make_problem, hyper_kw):
    X, params = make_problem(20, 8, 5)
    SparseAutoencoder.from_weights(**params, **hyper_kw).save(tmp_path / "m.zarr")
    model = SparseAutoencoder.load(tmp_path / "m.zarr")
    for call in (model.cost_and_grad, model.transform):
        with pytest.raises(DataError) as info:
            call(X[:, :7])
        msg = str(info.value)
        assert "\n" not in msg
        assert "7 features" in msg and "expecting 8" in msg and "width" in msg


# ----------------------------------------------------------------- from_weights

def test_from_weights(make_problem, hyper_kw):
    _, p = make_problem(5, 8, 5)
    model = SparseAutoencoder.from_weights(**p, **hyper_kw, dtype="float32")
    assert model.n_hidden == 5 and model.n_visible_ == 8 and model.dtype == "float32"
    assert_bit_identical(model.params_, p)


@pytest.mark.parametrize("name, shape, expected", [
    ("b1", (4,), "(5,)"), ("W2", (5, 8), "(8, 5)"), ("b2", (5,), "(8,)"), ("W1", (40,), "2-D"),
])
def test_from_weights_checks_shapes(name, shape, expected, make_problem):
    _, p = make_problem(5, 8, 5)
    p[name] = np.zeros(shape)
    with pytest.raises(ParameterError) as info:
        SparseAutoencoder.from_weights(**p)
    msg = str(info.value)
    assert "\n" not in msg and name in msg and expected in msg


# ----------------------------------------------------------------- not fitted

@pytest.mark.parametrize("call", ["cost_and_grad", "transform", "save", "params_"])
def test_not_fitted(call, data, tmp_path):
    model = SparseAutoencoder(n_hidden=4)
    with pytest.raises(NotFittedError) as info:
        if call == "params_":
            _ = model.params_
        elif call == "save":
            model.save(tmp_path / "m.zarr")
        else:
            getattr(model, call)(data)
    msg = str(info.value)
    assert "\n" not in msg and "fit()" in msg
    assert isinstance(info.value, StreamaeError) and isinstance(info.value, AttributeError)
    assert not (tmp_path / "m.zarr").exists()


# ----------------------------------------------------------------- errors

def _fitted(hyper_kw, **params):
    rng = np.random.default_rng(0)
    model = SparseAutoencoder.from_weights(**init_params(8, 5, rng), **hyper_kw,
                                           dtype="float64")
    return model.set_params(**params)


def _fit_with(**params):
    """fit() on good data: where the hyperparameters are checked."""
    return SparseAutoencoder(**params).fit(GOOD)


def _size_in_bytes(msg):
    """The first 'N unit' byte count in a message, in bytes."""
    import re

    number, unit = re.search(r"(\d+(?:\.\d+)?) (B|KiB|MiB|GiB)\b", msg).groups()
    return float(number) * {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}[unit]


GOOD = np.full((50, 8), 0.5)

# (id, action(tmp_path, hyper_kw), exception type, words the message must contain)
ERROR_CASES = [
    ("1-D data", lambda t, h: _fitted(h).cost_and_grad(GOOD[:, 0]),
     DataError, ["(50,)", "1-D", "2-D", "reshape"]),
    ("3-D data", lambda t, h: _fitted(h).cost_and_grad(GOOD.reshape(50, 2, 4)),
     DataError, ["(50, 2, 4)", "3-D", "2-D", "reshape"]),
    ("empty", lambda t, h: _fitted(h).cost_and_grad(np.empty((0, 8))),
     DataError, ["empty", "(0, 8)", "at least one row"]),
    ("empty fit", lambda t, h: SparseAutoencoder(**h).fit(np.empty((0, 8))),
     DataError, ["empty", "(0, 8)", "at least one row"]),
    ("missing path", lambda t, h: _fitted(h).cost_and_grad(str(t / "missing.zarr")),
     DataError, ["missing.zarr", "does not exist", "check the path"]),
    ("missing path fit",
     lambda t, h: SparseAutoencoder(**h).fit(str(t / "missing.zarr")),
     DataError, ["missing.zarr", "does not exist", "check the path"]),
    ("strings", lambda t, h: _fitted(h).cost_and_grad(np.full((4, 8), "0.5")),
     DataError, ["non-numeric", "<U3", "convert it to float32 or float64"]),
    ("width", lambda t, h: _fitted(h).cost_and_grad(GOOD[:, :7]),
     DataError, ["7 features", "expecting 8"]),
    ("rho 0", lambda t, h: _fit_with(rho=0.0), ParameterError, ["rho", "(0, 1)", "0.0"]),
    ("rho 1", lambda t, h: _fit_with(rho=1.0), ParameterError, ["rho", "(0, 1)", "1.0"]),
    ("rho > 1", lambda t, h: _fit_with(rho=1.5), ParameterError, ["rho", "1.5"]),
    ("rho < 0", lambda t, h: _fit_with(rho=-0.1), ParameterError, ["rho", "-0.1"]),
    ("rho nan", lambda t, h: _fit_with(rho=float("nan")), ParameterError, ["rho", "nan"]),
    ("beta < 0", lambda t, h: _fit_with(beta=-1.0), ParameterError,
     ["beta", ">= 0", "-1.0", "use 0 to turn sparsity off"]),
    ("beta nan", lambda t, h: _fit_with(beta=float("nan")), ParameterError,
     ["beta", "nan"]),
    ("weight_decay < 0", lambda t, h: _fit_with(weight_decay=-1e-4), ParameterError,
     ["weight_decay", ">= 0", "-0.0001"]),
    ("weight_decay nan", lambda t, h: _fit_with(weight_decay=float("nan")),
     ParameterError, ["weight_decay", "nan"]),
    ("from_weights rho", lambda t, h: SparseAutoencoder.from_weights(
        **init_params(8, 5, np.random.default_rng(0)), rho=2.0), ParameterError, ["rho", "2.0"]),
    ("n_hidden 0", lambda t, h: _fit_with(n_hidden=0), ParameterError,
     ["n_hidden", ">= 1", "0"]),
    ("n_hidden -3", lambda t, h: _fit_with(n_hidden=-3), ParameterError,
     ["n_hidden", "-3"]),
    ("n_hidden float", lambda t, h: _fit_with(n_hidden=2.5), ParameterError,
     ["n_hidden", "integer", "2.5"]),
    ("dtype", lambda t, h: _fit_with(dtype="float16"), ParameterError,
     ["dtype", "float16", "'float32' or 'float64'"]),
    ("strategy cost_and_grad",
     lambda t, h: _fitted(h, strategy="three-pass").cost_and_grad(GOOD), ParameterError,
     ["unknown strategy 'three-pass'", "two-pass", "one-pass", "cached"]),
    ("strategy fit", lambda t, h: _fit_with(**h, strategy="three-pass"),
     ParameterError, ["unknown strategy 'three-pass'", "two-pass", "one-pass", "cached"]),
    ("optimizer", lambda t, h: _fit_with(**h, optimizer="adam"),
     ParameterError, ["unknown optimizer 'adam'", "lbfgs", "gd"]),
    ("max_iter", lambda t, h: _fit_with(**h, max_iter=-1),
     ParameterError, ["max_iter", "-1"]),
    # 50 rows x 5 units x 8 bytes = 2000 bytes of activations; 1000 allowed.
    ("cached budget", lambda t, h: _fitted(h, strategy="cached",
                                           run_options={"cache_limit": 1000}).cost_and_grad(GOOD),
     MemoryBudgetError, ["'cached'", "50 rows x 5 units x float64", "1000 B allowed",
                         "cache_limit", "'one-pass'"]),
    ("cached budget fit", lambda t, h: _fit_with(
        n_hidden=5, **h, dtype="float64", strategy="cached", run_options={"cache_limit": 1000}),
     MemoryBudgetError, ["'cached'", "50 rows x 5 units", "1000 B allowed", "'one-pass'"]),
]


@pytest.mark.parametrize("action, error, words",
                         [pytest.param(*case[1:], id=case[0]) for case in ERROR_CASES])
def test_errors_are_one_line_and_say_what_where_and_how(action, error, words, tmp_path,
                                                        hyper_kw):
    with pytest.raises(error) as info:
        action(tmp_path, hyper_kw)
    msg = str(info.value)
    assert isinstance(info.value, StreamaeError)
    assert "\n" not in msg and msg.strip() == msg
    for word in words:
        assert word in msg, (word, msg)


def test_cached_budget_error_states_the_estimate(hyper_kw):
    with pytest.raises(MemoryBudgetError) as info:
        _fitted(hyper_kw, strategy="cached", run_options={"cache_limit": 1999}).cost_and_grad(GOOD)
    # "would keep 1.95 KiB": 50 x 5 x 8 = 2000 bytes, to the 3 digits shown.
    assert _size_in_bytes(str(info.value)) == pytest.approx(2000, rel=5e-3)
    # Exactly at the limit it is allowed.
    cost, _ = _fitted(hyper_kw, strategy="cached",
                      run_options={"cache_limit": 2000}).cost_and_grad(GOOD)
    assert np.isfinite(cost)


def test_path_to_a_group_is_not_an_array(tmp_path, hyper_kw):
    zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    with pytest.raises(DataError) as info:
        _fitted(hyper_kw).cost_and_grad(str(tmp_path / "g.zarr"))
    msg = str(info.value)
    assert "\n" not in msg and "g.zarr" in msg and "not a group" in msg


@pytest.mark.parametrize("make, words", [
    (lambda X: SparseAutoencoder(random_state=-1).fit(X), ["random_state", "-1"]),
    (lambda X: SparseAutoencoder(random_state=1.5).fit(X), ["random_state", "1.5"]),
    (lambda X: new_model({}).set_params(max_iter=2.5).fit(X), ["max_iter", "2.5"]),
    (lambda X: new_model({}).set_params(max_iter=2, run_options={"block_rows": 0}).fit(X),
     ["block_rows", "0"]),
    (lambda X: new_model({}).set_params(max_iter=2, run_options={"chunk_rows": 0}).fit(X),
     ["chunk_rows", "0"]),
    (lambda X: new_model({}).set_params(max_iter=2, run_options={"split_every": 1}).fit(X),
     ["split_every", "1"]),
    (lambda X: new_model({}).set_params(max_iter=2, run_options={"read_ahead": -1}).fit(X),
     ["read_ahead", "-1"]),
    (lambda X: new_model({}).set_params(max_iter=2, run_options={"page_cache": "off"}).fit(X),
     ["page_cache", "'off'", "auto, direct, drop, keep"]),
], ids=["seed-negative", "seed-float", "max-iter-float", "block-rows", "chunk-rows",
        "split-every", "read-ahead", "page-cache"])
def test_run_options_are_checked_before_any_work(make, words, data):
    with pytest.raises(StreamaeError) as info:
        make(data)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_transform_refuses_values_outside_the_unit_interval(data, hyper_kw):
    model = fit(new_model(hyper_kw), data, max_iter=1)
    bad = data.copy()
    bad[130, 3] = np.nan
    with pytest.raises(DataError, match="first row 130"):
        model.transform(bad)
