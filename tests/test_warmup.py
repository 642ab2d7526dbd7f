"""The warm-up on a subsample: planned from the data's shape only, ends on the exact
full-data objective, bit-identical across schedulers and resumes."""

import os
import signal

import numpy as np
import pytest

from streamae import ParameterError, SparseAutoencoder, TrainingInterrupted, _warmup
from streamae import _checkpoint as C

PARAMS = ("W1_", "b1_", "W2_", "b2_")


def same_bits(a, b):
    return all(getattr(a, k).tobytes() == getattr(b, k).tobytes() for k in PARAMS)


def model(max_iter=12, scheduler=None, warmup="subsample", **params):
    """Chunks of 500 rows; the warm-up on every 16th row (250 of 4000)."""
    return SparseAutoencoder(n_hidden=5, max_iter=max_iter, warmup=warmup, dtype="float64",
                             run_options={"chunk_rows": 500, "scheduler": scheduler}, **params)


@pytest.fixture(scope="module")
def X():
    return np.random.default_rng(11).uniform(0.05, 0.95, size=(4000, 12))


def test_plan_depends_on_the_shape_only():
    assert _warmup.plan("auto", (262_144, 64), 4) == 16
    assert _warmup.plan("auto", (262_143, 64), 4) == 0  # subsample under 16,384 rows
    assert _warmup.plan("subsample", (100, 8), 8) == 16
    assert _warmup.plan("subsample", (31, 8), 8) == 0  # fewer than two rows
    assert _warmup.plan("none", (10**7, 64), 4) == 0
    m, n = 10**9, 64  # 256 GB: the stride grows so that the subsample stays in its budget
    stride = _warmup.plan("auto", (m, n), 4)
    assert stride > 16 and (m // stride) * n * 4 <= _warmup.MAX_BYTES


def test_fit_ends_on_the_exact_full_objective(X):
    fitted = model().fit(X)
    phases = [r["phase"] for r in fitted.history_]
    first_full = phases.index("full")
    assert first_full > 1 and set(phases[:first_full]) == {"warmup"}
    assert set(phases[first_full:]) == {"full"} and fitted.n_iter_ == 12
    cost, _ = fitted.cost_and_grad(X)
    assert cost == fitted.history_[-1]["cost"]
    passes = [r["data_passes"] for r in fitted.history_]
    assert passes == sorted(passes)
    warm_evals = fitted.history_[first_full - 1]["evaluations"]
    assert passes[first_full] == pytest.approx(1 + warm_evals * 250 / 4000 + 1)


def test_the_warm_start_is_closer_than_the_random_one(X):
    warm = model(max_iter=8).fit(X)
    plain = model(max_iter=8, warmup="none").fit(X)
    assert {r["phase"] for r in plain.history_} == {"full"}
    start = next(r for r in warm.history_ if r["phase"] == "full")
    assert start["cost"] < 0.5 * plain.history_[0]["cost"]


@pytest.mark.parametrize("scheduler", ["synchronous", "processes"])
def test_bit_identical_across_schedulers(X, scheduler):
    assert same_bits(model().fit(X), model(scheduler=scheduler).fit(X))


@pytest.mark.parametrize("phase, at", [("warmup", 3), ("full", 2)])
def test_interrupt_in_either_phase_resumes_bit_identically(tmp_path, X, phase, at):
    full = model().fit(X)
    ckpt = tmp_path / "run.ckpt"

    def ctrl_c(model, record):
        if record["phase"] == phase and record["iteration"] == at:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(TrainingInterrupted):
        model().fit(X, checkpoint=ckpt, callback=ctrl_c)
    assert C.read(ckpt).state.phase == phase
    resumed = model().fit(X, checkpoint=ckpt, resume=True)
    assert same_bits(full, resumed)
    assert [r["cost"] for r in resumed.history_] == [r["cost"] for r in full.history_]


def test_a_warm_start_from_trained_weights_skips_the_warmup(X):
    fitted = model(max_iter=5, warm_start=True).fit(X)
    fitted.fit(X)
    assert {r["phase"] for r in fitted.history_} == {"full"}


def test_an_unknown_warmup_is_a_one_line_error(X):
    with pytest.raises(ParameterError, match="warmup must be one of 'auto', 'subsample', "
                                             "'none', got 'fast'"):
        model(warmup="fast").fit(X)
