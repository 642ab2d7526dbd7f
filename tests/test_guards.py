"""Numerical guards: rho_hat at 0 or 1 in floating point, or a non-finite cost or
gradient, never turns into NaN weights. Trial points where the objective is not
finite are rejected (the line search backtracks); if no finite point decreases
the cost, training stops with the last finite weights and says so."""

import numpy as np
import pytest

from streamae import NumericalError, SparseAutoencoder, _optim
from streamae import _checkpoint as C
from streamae._objective import make_hyper, sparsity_terms
from streamae._store import write_array
from streamae.cli import main

# Constant rows of ones with many features: every hidden unit sees the same
# pre-activation on every row, so one long trial step saturates all of them at
# once (rho_hat exactly 0 or 1) -- in float32 the sigmoid's exp overflows.
# Gradient descent's trial steps (twice the last accepted one) drive the units of
# constant data into saturation; L-BFGS, its initial Hessian scaled per layer,
# steps around it on this data.
SATURATING = dict(n_hidden=10, rho=1e-3, beta=30.0, weight_decay=0.0, optimizer="gd")


@pytest.fixture(scope="module")
def ones():
    return np.ones((300, 1000))


# ------------------------------------------------------------------ the sparsity term

def test_saturated_rho_hat_names_the_units():
    with pytest.raises(NumericalError, match=r"rho_hat of hidden unit\(s\) \[1, 3\] is exactly "
                       r"0 or 1 in floating point") as info:
        sparsity_terms(np.array([5.0, 0.0, 2.0, 10.0]), 10, make_hyper(0.1, 3.0, 0.0))
    assert info.value.units == [1, 3]


def test_nan_rho_hat_names_the_units():
    with pytest.raises(NumericalError, match=r"unit\(s\) \[2\] is not a number") as info:
        sparsity_terms(np.array([5.0, 1.0, np.nan]), 10, make_hyper(0.1, 3.0, 0.0))
    assert info.value.units == [2]


def test_without_sparsity_a_saturated_unit_is_harmless():
    rho_hat, kl, c = sparsity_terms(np.array([0.0, 5.0, 10.0]), 10, make_hyper(0.1, 0.0, 0.0))
    assert kl == 0.0 and not c.any() and rho_hat.tolist() == [0.0, 0.5, 1.0]


def test_evaluation_at_saturating_weights_raises_with_units():
    model = SparseAutoencoder.from_weights(np.full((3, 4), 1e4), np.zeros(3), np.zeros((4, 3)),
                                           np.zeros(4), dtype="float32")
    with pytest.raises(NumericalError, match=r"\[0, 1, 2\] is exactly 0 or 1") as info:
        model.cost_and_grad(np.full((20, 4), 0.5))
    assert info.value.units == [0, 1, 2]


def test_non_finite_cost_is_an_error_not_a_nan():
    model = SparseAutoencoder.from_weights(np.full((2, 3), 1e200), np.zeros(2),
                                           np.zeros((3, 2)), np.zeros(3), beta=0.0,
                                           weight_decay=1e200, dtype="float64")
    with pytest.raises(NumericalError, match=r"the cost \(inf\) or gradient is not finite"):
        model.cost_and_grad(np.full((20, 3), 0.5))


# ------------------------------------------------------------------ the optimizer's guard

def _walled_quadratic(target, wall):
    """0.5 ||theta - target||^2, not finite (NumericalError) where any |theta| > wall."""
    def fun(theta):
        if np.abs(theta).max() > wall:
            error = NumericalError("beyond the wall")
            error.units = [int(np.argmax(np.abs(theta)))]
            raise error
        r = theta - target
        return 0.5 * r.dot(r), r, None
    return fun


def test_gd_rejects_non_finite_trial_steps():
    fun = _walled_quadratic(np.zeros(1), wall=10.0)
    state, _ = _optim.start(fun, np.ones(1))
    info, done = _optim.step(fun, state, "gd", learning_rate=100.0)
    # steps 100, 50, 25, 12.5 land beyond the wall and are rejected
    assert [r["iteration"] for r in state.rejections] == [1, 1, 1, 1]
    assert [round(r["step"], 6) for r in state.rejections] == [100, 50, 25, 12.5]
    assert state.rejections[0]["units"] == [0] and state.iteration == 1
    assert np.isfinite(state.theta).all() and abs(state.theta[0]) <= 10


def test_lbfgs_backtracks_from_a_rejected_wolfe_step_and_stays_finite():
    fun = _walled_quadratic(np.full(1, 20.0), wall=5.0)
    state, _ = _optim.start(fun, np.zeros(1))
    done = False
    while not done and state.iteration < 50:
        _, done = _optim.step(fun, state, "lbfgs")
    assert state.rejections and state.rejections[0]["iteration"] == 2
    assert np.isfinite(state.theta).all() and 0 < state.theta[0] <= 5.0
    assert np.isfinite(state.cost) and np.isfinite(state.grad).all()


def test_no_finite_decrease_stops_with_the_last_finite_state():
    calls = []

    def fun(theta):  # finite only at the start
        calls.append(theta.copy())
        if len(calls) > 1:
            raise NumericalError("saturated")
        return 1.0, np.ones_like(theta), None

    state, _ = _optim.start(fun, np.zeros(3))
    info, done = _optim.step(fun, state, "lbfgs")
    assert info is None and done and state.iteration == 0
    assert state.message.startswith("the line search found no finite point that decreases the "
                                    "cost at iteration 1: 30 trial step(s) were not finite")
    assert state.message.endswith("stopped with the last finite weights, from iteration 0")
    assert state.theta.tolist() == [0.0, 0.0, 0.0] and state.evaluations == 31


def test_non_finite_start_is_a_clear_error():
    def fun(theta):
        error = NumericalError("rho_hat of hidden unit(s) [4] is exactly 0 or 1")
        error.units = [4]
        raise error

    with pytest.raises(NumericalError, match=r"^at the initial weights \(iteration 0\): rho_hat "
                       r"of hidden unit\(s\) \[4\]") as info:
        _optim.start(fun, np.zeros(2))
    assert info.value.units == [4]


def test_step_leaves_state_untouched_when_interrupted():
    fun = _walled_quadratic(np.full(2, 3.0), wall=100.0)
    state, _ = _optim.start(fun, np.zeros(2))
    _optim.step(fun, state, "lbfgs")
    before = (state.theta.copy(), state.cost, state.iteration, state.evaluations,
              len(state.s_hist))

    def interrupted(theta):
        raise C.Stop

    with pytest.raises(C.Stop):
        _optim.step(interrupted, state, "lbfgs")
    assert (state.theta.tolist(), state.cost, state.iteration, state.evaluations,
            len(state.s_hist)) == (before[0].tolist(), *before[1:])


# ------------------------------------------------------------------ whole fits

def test_data_saturating_every_unit_trains_to_finite_weights(ones):
    model = SparseAutoencoder(dtype="float64", max_iter=200, **SATURATING).fit(ones)
    assert all(np.isfinite(getattr(model, k)).all() for k in ("W1_", "b1_", "W2_", "b2_"))
    assert model.guard_events_, "the data should have driven trial steps into saturation"
    event = model.guard_events_[0]
    assert event["iteration"] >= 1 and event["units"]
    assert "is exactly 0 or 1 in floating point" in event["message"]
    assert 0 < model.rho_hat_.min() and model.rho_hat_.max() < 1
    assert np.isfinite(model.history_[-1]["cost"])


def test_float32_sigmoid_overflow_trains_or_stops_with_the_last_good_checkpoint(tmp_path, ones):
    ckpt = tmp_path / "run.ckpt"
    model = SparseAutoencoder(dtype="float32", max_iter=200, **SATURATING).fit(
        ones, checkpoint=ckpt, checkpoint_every=5)
    # exp overflows in float32 on long trial steps: those were rejected, named by unit
    assert model.guard_events_ and all(e["units"] for e in model.guard_events_)
    assert all(np.isfinite(getattr(model, k)).all() for k in ("W1_", "b1_", "W2_", "b2_"))
    assert np.isfinite(model.history_[-1]["cost"]) and model.stop_reason_
    saved = C.read(ckpt)  # the last good state, with the reason it stopped
    assert saved.state.iteration == model.n_iter_
    if not model.stop_reason_.startswith("reached max_iter"):
        assert saved.state.message == model.stop_reason_
    assert saved.state.theta.tobytes() == np.concatenate(
        [getattr(model, k).ravel() for k in ("W1_", "b1_", "W2_", "b2_")]).tobytes()
    again = SparseAutoencoder(dtype="float32", max_iter=200, **SATURATING).fit(
        ones, checkpoint=ckpt, resume=True)
    assert again.n_iter_ == model.n_iter_ and again.W1_.tobytes() == model.W1_.tobytes()


def test_cli_reports_the_guard_in_one_line(tmp_path, ones, capsys, monkeypatch):
    write_array(tmp_path / "ones.zarr", ones, chunk_rows=100)
    monkeypatch.chdir(tmp_path)
    code = main(["train", "ones.zarr", "--out", "model.zarr", "--hidden", "10", "--rho", "1e-3",
                 "--beta", "30", "--weight-decay", "0", "--dtype", "float64", "--optimizer", "gd",
                 "--quiet"])
    captured = capsys.readouterr()
    assert code == 0
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("streamae: numerical guard: ")
    assert "trial step(s) rejected because the objective was not finite there (iteration(s) " \
        in lines[0]
    assert lines[0].endswith("saturated); training continued from the last finite point")
    assert SparseAutoencoder.load("model.zarr").n_iter_ > 0
