"""The linear decoder (a3 = z3, d3 = a3 - x): kernels against NumPy, finite
differences and the reference for every strategy, determinism across
schedulers, saving and loading, and which data each decoder accepts.

Tolerances as in test_engine.py and test_kernels.py (float64: 1e-12 relative
to the largest entry; only the order of the additions differs).
"""

import numpy as np
import pytest
import zarr
from helpers import sigmoid
from numpy.testing import assert_allclose, assert_array_equal

from streamae import STRATEGIES, DataError, ParameterError, SparseAutoencoder
from streamae import _kernels as K
from streamae._gradcheck import check_gradient
from streamae._objective import PARAM_NAMES, init_params, make_hyper, reference_cost_and_grad
from streamae.cli import main

# The exercise's criterion (central differences, eps 1e-4). Measured on the
# unit-variance data below: 3.7e-10 for every strategy and for the reference
# alike; it is the differences' O(eps^2) truncation error (with eps 1e-5 the
# reference gives 8.5e-11), so the data here has the scale of whitened data.
GRADCHECK_TOL = 1e-9
RTOL64 = 1e-12


def real_problem(rng, m=60, n=8, s=5, scale=1.5):
    """Real-valued data (negative and above 1) and weights with small random biases."""
    X = rng.normal(0.0, scale, size=(m, n))
    params = init_params(n, s, rng)
    params["b1"] = rng.normal(0.0, 0.1, s)
    params["b2"] = rng.normal(0.0, 0.1, n)
    return X, params


def linear_model(params, hyper_kw, dtype="float64", strategy="one-pass", **run_options):
    return SparseAutoencoder.from_weights(**params, **hyper_kw, dtype=dtype, decoder="linear",
                                          strategy=strategy, run_options=run_options)



# ----------------------------------------------------------------- kernels

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("block_rows", [1, 9, 100])
def test_one_pass_kernel_matches_numpy(rng, dtype, block_rows):
    X, p = real_problem(rng, 45, 8, 5)
    X, p = X.astype(dtype), {k: v.astype(dtype) for k, v in p.items()}
    out = K.one_pass_sums(X, p["W1"], p["b1"], p["W2"], p["b2"], 0, block_rows, True)
    x = X.astype(np.float64)
    a2 = sigmoid(x @ p["W1"].T.astype(np.float64) + p["b1"])
    d3 = a2 @ p["W2"].T.astype(np.float64) + p["b2"] - x
    fp = a2 * (1 - a2)
    e2 = (d3 @ p["W2"].astype(np.float64)) * fp
    expected = [a2.sum(0), (d3 ** 2).sum(), e2.T @ x, e2.sum(0), d3.T @ a2, d3.sum(0),
                fp.T @ x, fp.sum(0)]
    rtol = 1e-12 if dtype == np.float64 else 5e-6
    for got, want in zip(out[:8], expected):
        assert_allclose(got, want, rtol=rtol, atol=rtol * np.abs(want).max())
    assert_array_equal(out[8], [0, -1])


def test_two_pass_and_cached_kernels_match_one_pass(rng):
    X, p = real_problem(rng, 45, 8, 5)
    c = rng.normal(0.0, 0.5, 5)
    one = K.one_pass_sums(X, p["W1"], p["b1"], p["W2"], p["b2"], 0, 16, True)
    gW1 = one[2] + c[:, None] * one[6]
    gb1 = one[3] + c * one[7]
    two = K.backprop_sums(X, p["W1"], p["b1"], p["W2"], p["b2"], c, 0, 16, True)
    A2 = K.hidden_activations(X, p["W1"], p["b1"], 16)[0]
    cached = K.backprop_sums_cached(X, A2, p["W2"], p["b2"], c, 0, 16, True)
    for out in (two, cached):
        for got, want in zip(out[:5], (one[1], gW1, gb1, one[4], one[5])):
            assert_allclose(got, want, rtol=1e-12, atol=1e-12 * np.abs(want).max())


def test_kernels_count_only_non_finite_values_as_bad(rng):
    X, p = real_problem(rng, 30, 8, 5)
    X[7, 2] = np.inf
    X[9, 0] = np.nan
    out = K.one_pass_sums(X, p["W1"], p["b1"], p["W2"], p["b2"], 100, 4, True)
    assert_array_equal(out[8], [2, 107])
    out = K.one_pass_sums(X, p["W1"], p["b1"], p["W2"], p["b2"], 100, 4, False)
    assert out[8][0] > 2  # the sigmoid decoder also refuses values outside [0, 1]


# ----------------------------------------------------------------- the objective

def test_reference_linear_decoder_formulas(rng, hyper_kw):
    """The reference's linear decoder, per sample from the tutorial's formulas."""
    X, p = real_problem(rng, 20, 6, 4)
    hyper = make_hyper(**hyper_kw, decoder="linear")
    cost, grad = reference_cost_and_grad(X, p, hyper)
    rho, beta, lam = hyper.rho, hyper.beta, hyper.weight_decay
    a2 = sigmoid(X @ p["W1"].T + p["b1"])
    rho_hat = a2.mean(0)
    gW2 = np.zeros_like(p["W2"])
    sq = 0.0
    for x, h in zip(X, a2):
        a3 = p["W2"] @ h + p["b2"]
        sq += 0.5 * np.sum((a3 - x) ** 2)
        gW2 += np.outer(a3 - x, h)
    kl = np.sum(rho * np.log(rho / rho_hat) + (1 - rho) * np.log((1 - rho) / (1 - rho_hat)))
    expected = sq / 20 + lam / 2 * (np.sum(p["W1"] ** 2) + np.sum(p["W2"] ** 2)) + beta * kl
    assert cost == pytest.approx(expected, rel=1e-13)
    assert_allclose(grad["W2"], gW2 / 20 + lam * p["W2"], rtol=1e-13)


def test_gradient_check_reference(rng, hyper_kw):
    X, params = real_problem(rng, 40, 6, 4, scale=1.0)
    hyper = make_hyper(**hyper_kw, decoder="linear")
    diff = check_gradient(lambda p: reference_cost_and_grad(X, p, hyper), params)
    assert diff < GRADCHECK_TOL


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_gradient_check_every_strategy(strategy, rng, hyper_kw):
    X, params = real_problem(rng, 60, 8, 5, scale=1.0)

    def evaluate(p):
        # 17-row chunks: 4 chunks, the last one shorter.
        return linear_model(p, hyper_kw, strategy=strategy, chunk_rows=17,
                            scheduler="synchronous").cost_and_grad(X)

    diff = check_gradient(evaluate, params)
    assert diff < GRADCHECK_TOL


@pytest.mark.parametrize("chunk_rows", [50, 13, 5, 1])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_strategies_match_reference_on_a_store(strategy, chunk_rows, rng, hyper_kw,
                                               write_zarr):
    X, params = real_problem(rng, 50, 8, 5)
    path = write_zarr(X, chunk_rows)
    cost, grad = linear_model(params, hyper_kw, strategy=strategy).cost_and_grad(path)
    ref_cost, ref_grad = reference_cost_and_grad(
        X, params, make_hyper(**hyper_kw, decoder="linear"))
    assert cost == pytest.approx(ref_cost, rel=RTOL64, abs=0)
    for k in PARAM_NAMES:
        assert_allclose(grad[k], ref_grad[k], rtol=RTOL64,
                        atol=RTOL64 * np.abs(ref_grad[k]).max(), err_msg=k)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_bit_identical_across_schedulers(strategy, rng, hyper_kw, write_zarr):
    X, params = real_problem(rng, 400, 16, 6)
    path = write_zarr(X.astype(np.float32), 37)
    runs = [linear_model(params, hyper_kw, "float32", strategy, scheduler=sched)
            .cost_and_grad(path) for sched in ("synchronous", "threads", "processes")]
    for cost, grad in runs[1:]:
        assert cost == runs[0][0]
        for k in PARAM_NAMES:
            assert_array_equal(grad[k], runs[0][1][k], strict=True)


def test_sigmoid_is_unchanged_by_the_flag(rng, hyper_kw, write_zarr):
    X, params = real_problem(rng, 50, 8, 5)
    X = sigmoid(X)  # in (0, 1)
    path = write_zarr(X, 13)
    cost, grad = SparseAutoencoder.from_weights(**params, **hyper_kw, dtype="float64") \
        .cost_and_grad(path)
    ref_cost, ref_grad = reference_cost_and_grad(X, params, make_hyper(**hyper_kw))
    assert cost == pytest.approx(ref_cost, rel=RTOL64)
    lin_cost, _ = linear_model(params, hyper_kw).cost_and_grad(path)
    assert lin_cost != pytest.approx(cost, rel=1e-3)


# ----------------------------------------------------------------- data each decoder accepts

def test_negative_data_accepted_by_linear_refused_by_sigmoid(rng, hyper_kw, write_zarr):
    X, params = real_problem(rng, 50, 8, 5)
    path = write_zarr(X, 10)
    linear_model(params, hyper_kw).cost_and_grad(path)
    sigmoid = SparseAutoencoder.from_weights(**params, **hyper_kw, dtype="float64")
    with pytest.raises(DataError, match=r"outside \[0, 1\]"):
        sigmoid.cost_and_grad(path)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_linear_refuses_nan_and_inf_naming_rows(strategy, rng, hyper_kw, write_zarr):
    X, params = real_problem(rng, 50, 8, 5)
    X[23, 3] = np.inf
    X[25, 0] = np.nan
    path = write_zarr(X, 10)
    with pytest.raises(DataError) as info:
        linear_model(params, hyper_kw, strategy=strategy).cost_and_grad(path)
    msg = str(info.value)
    assert "\n" not in msg
    assert "chunk 2 (rows 20-29)" in msg
    assert "1 NaN value(s) in rows 25" in msg and "1 inf value(s) in rows 23" in msg
    assert "outside" not in msg and "linear decoder needs finite values" in msg


def test_unknown_decoder_is_refused():
    with pytest.raises(ParameterError, match="decoder must be one of sigmoid, linear"):
        SparseAutoencoder(decoder="relu").fit(np.full((10, 3), 0.5))


# ----------------------------------------------------------------- fit, transform, save, load

@pytest.fixture
def real_store(rng, write_zarr):
    X = rng.normal(0.0, 1.0, size=(300, 12)) @ rng.normal(0.0, 1.0, size=(12, 12))
    return write_zarr(X, 64), X


def test_fit_transform_save_load(tmp_path, real_store, hyper_kw):
    path, X = real_store
    model = SparseAutoencoder(n_hidden=6, **hyper_kw, dtype="float64", decoder="linear",
                              max_iter=15)
    model.fit(path)
    assert model.history_[-1]["cost"] < model.history_[0]["cost"]
    H = model.transform(path)
    assert_allclose(H, sigmoid(X @ model.W1_.T + model.b1_), rtol=1e-12)
    model.save(tmp_path / "m.zarr")
    loaded = SparseAutoencoder.load(tmp_path / "m.zarr")
    assert loaded.decoder == "linear"
    for k in PARAM_NAMES:
        assert_array_equal(loaded.params_[k], model.params_[k])
    assert loaded.cost_and_grad(path)[0] == model.cost_and_grad(path)[0]


def test_model_without_a_decoder_loads_as_sigmoid(tmp_path, make_problem, hyper_kw):
    _, params = make_problem()
    SparseAutoencoder.from_weights(**params, **hyper_kw).save(tmp_path / "old.zarr")
    group = zarr.open_group(str(tmp_path / "old.zarr"), mode="r+")
    attrs = dict(group.attrs)
    attrs.pop("decoder", None)
    assert attrs["params"].pop("decoder") == "sigmoid"
    group.attrs.clear()
    group.attrs.update(attrs)
    assert SparseAutoencoder.load(tmp_path / "old.zarr").decoder == "sigmoid"


def test_cli_train_linear(tmp_path, real_store, capsys):
    path, _ = real_store
    out = str(tmp_path / "model.zarr")
    assert main(["train", path, "--out", out, "--decoder", "linear", "--hidden", "5",
                 "--rho", "0.1", "--max-iter", "3", "--quiet"]) == 0
    assert SparseAutoencoder.load(out).decoder == "linear"
    assert main(["train", path, "--out", str(tmp_path / "s.zarr"), "--max-iter", "3",
                 "--quiet"]) == 2
    assert "outside [0, 1]" in capsys.readouterr().err


def test_resume_refuses_another_decoder(tmp_path, rng, write_zarr, hyper_kw):
    from streamae import CheckpointError

    path = write_zarr(rng.uniform(0.0, 1.0, size=(60, 8)), 20)
    ckpt = str(tmp_path / "run.ckpt")
    SparseAutoencoder(n_hidden=4, **hyper_kw, decoder="linear", max_iter=2).fit(
        path, checkpoint=ckpt, checkpoint_every=1)
    with pytest.raises(CheckpointError, match="decoder"):
        SparseAutoencoder(n_hidden=4, **hyper_kw, max_iter=3).fit(
            path, checkpoint=ckpt, resume=True)
    resumed = SparseAutoencoder(n_hidden=4, **hyper_kw, decoder="linear", max_iter=3).fit(
        path, checkpoint=ckpt, resume=True)
    assert resumed.resumed_from_ == 2
