"""The warm-up on levels of a sample: planned from the data's shape and the model's
size only, its own budget (not max_iter), ends on the exact full-data objective,
bit-identical across schedulers, resumes and extensions."""

import os
import signal

import numpy as np
import pytest

from streamae import DataError, ParameterError, SparseAutoencoder, TrainingInterrupted, _warmup
from streamae import _checkpoint as C

PARAMS = ("W1_", "b1_", "W2_", "b2_")


def same_bits(a, b):
    return all(getattr(a, k).tobytes() == getattr(b, k).tobytes() for k in PARAMS)


def model(max_iter=6, scheduler=None, warmup="subsample", warmup_iter=16, **params):
    """Chunks of 500 rows; the sample is every 2nd row (2000 of 4000), its levels 16
    to 1000 rows."""
    return SparseAutoencoder(n_hidden=5, max_iter=max_iter, warmup=warmup, dtype="float64",
                             warmup_iter=warmup_iter,
                             run_options={"chunk_rows": 500, "scheduler": scheduler}, **params)


@pytest.fixture(scope="module")
def X():
    return np.random.default_rng(11).uniform(0.05, 0.95, size=(4000, 12))


@pytest.fixture(scope="module")
def X_auto():
    """Just above the threshold of warmup="auto" (65,536 rows)."""
    return np.random.default_rng(12).uniform(0.05, 0.95, size=(66_000, 6))


def test_plan_depends_on_the_shape_and_model_size_only():
    plan = _warmup.plan("auto", (1_000_000, 64), 4, 25)
    assert plan.stride == 2 and plan.levels == (64, 16, 4, 1)  # 3,907 to 250,000 rows
    assert plan.iterations == (200, 100, 100, 100)
    assert _warmup.plan("auto", (65_535, 64), 4, 25) is None  # under AUTO_MIN_ROWS
    # 1,024, 4,096 and 16,384 rows (MIN_LEVEL_ROWS 512):
    assert _warmup.plan("auto", (65_536, 64), 4, 25).levels == (16, 4, 1)
    # More weights need more rows per level: 1,600 units, 616,192 weights, 4,814 rows at least.
    assert _warmup.plan("auto", (200_000, 192), 4, 400).levels == (16, 4, 1)
    assert _warmup.plan("auto", (200_000, 192), 4, 1600).levels == (4, 1)
    assert _warmup.plan("auto", (200_000, 192), 4, 6400).levels == (1,)
    assert _warmup.plan("auto", (200_000, 192), 4, 25_600) is None
    assert _warmup.plan("subsample", (100, 8), 8, 5).levels == (4, 1)  # levels of 6 and 25 rows
    assert _warmup.plan("none", (10**7, 64), 4, 25) is None
    assert _warmup.plan("auto", (10**7, 64), 4, 25, warmup_iter=0) is None
    assert _warmup.plan("auto", (10**6, 64), 4, 25, warmup_iter=3).iterations == (3, 1, 1, 1)
    m, n = 10**9, 64  # 256 GB: the stride grows so that the sample stays in its budget
    plan = _warmup.plan("auto", (m, n), 4, 25)
    assert plan.stride > 2 and (m // plan.stride) * n * 4 <= _warmup.MAX_BYTES


def test_a_wide_store_warms_up():
    m, n = 100_000, 4096  # 1.6 GB of float32
    plan = _warmup.plan("auto", (m, n), 4, 100)
    assert plan is not None
    rows = m // plan.stride
    assert rows * n * 4 <= _warmup.MAX_BYTES
    weights = 2 * n * 100 + n + 100
    assert rows // 2 // plan.levels[0] >= max(_warmup.MIN_LEVEL_ROWS,
                                              weights / _warmup.WEIGHTS_PER_ROW)
    assert plan.levels == (1,)  # 7,142 rows: a quarter of them would be too few for 823,396 weights


def test_fit_ends_on_the_exact_full_objective(X):
    fitted = model().fit(X)
    history = fitted.history_
    phases = [r["phase"] for r in history]
    first_full = phases.index("full")
    assert set(phases[:first_full]) == {"warmup"} and set(phases[first_full:]) == {"full"}
    levels = [r["level"] for r in history[:first_full]]
    assert levels == sorted(levels) and set(levels) == {0, 1, 2, 3}
    assert fitted.n_iter_ == 6 and history[-1]["iteration"] == 6
    cost, _ = fitted.cost_and_grad(X)
    assert cost == history[-1]["cost"]
    passes = [r["data_passes"] for r in history]
    assert passes == sorted(passes)
    # The sample's read, one evaluation and one of the held-out rows.
    assert passes[0] == pytest.approx(1 + 2 / 256)
    assert passes[first_full] == pytest.approx(passes[first_full - 1] + 1)
    rows = {r["level"]: r["rows"] for r in history[:first_full]}
    assert rows == {0: 16, 1: 63, 2: 250, 3: 1000}


def test_the_warmup_does_not_depend_on_max_iter(X):
    short, long = model(max_iter=2).fit(X), model(max_iter=5).fit(X)
    warm = [r for r in short.history_ if r["phase"] == "warmup"]
    assert [r["cost"] for r in warm] == [r["cost"] for r in long.history_[:len(warm)]]
    assert [r["phase"] for r in long.history_[len(warm):]] == ["full"] * 6


def test_the_warm_start_is_closer_than_the_random_one(X):
    warm = model(max_iter=8).fit(X)
    plain = model(max_iter=8, warmup="none").fit(X)
    assert {r["phase"] for r in plain.history_} == {"full"}
    start = next(r for r in warm.history_ if r["phase"] == "full")
    assert start["cost"] < 0.5 * plain.history_[0]["cost"]


@pytest.mark.parametrize("scheduler", ["synchronous", "processes"])
def test_bit_identical_across_schedulers(X, scheduler):
    assert same_bits(model().fit(X), model(scheduler=scheduler).fit(X))


@pytest.mark.parametrize("level, at", [(0, 3), (2, 1), (3, 2), (None, 2)])
def test_interrupt_anywhere_resumes_bit_identically(tmp_path, X, level, at):
    full = model().fit(X)
    ckpt = tmp_path / "run.ckpt"
    start = {}

    def ctrl_c(model, record):
        key = record.get("level")
        start.setdefault(key, record["iteration"] - 1)
        if key == level and record["iteration"] - start[key] == at:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(TrainingInterrupted):
        model().fit(X, checkpoint=ckpt, callback=ctrl_c)
    assert C.read(ckpt).state.phase == ("full" if level is None else "warmup")
    resumed = model().fit(X, checkpoint=ckpt, resume=True)
    assert same_bits(full, resumed)
    assert [r["cost"] for r in resumed.history_] == [r["cost"] for r in full.history_]


def test_extending_a_finished_run_above_the_threshold_is_bit_identical(tmp_path, X_auto):
    def auto(max_iter):
        return SparseAutoencoder(n_hidden=3, max_iter=max_iter, dtype="float64",
                                 warmup_iter=12, run_options={"chunk_rows": 8192})

    uninterrupted = auto(8).fit(X_auto)
    assert {r["phase"] for r in uninterrupted.history_} == {"warmup", "full"}
    ckpt = tmp_path / "run.ckpt"
    auto(4).fit(X_auto, checkpoint=ckpt)
    extended = auto(8).fit(X_auto, checkpoint=ckpt, resume=True)
    assert same_bits(uninterrupted, extended)
    assert [r["cost"] for r in extended.history_] == [r["cost"] for r in uninterrupted.history_]


def test_a_callback_stops_the_fit_in_the_warmup(X):
    def stop(model, record):
        return record.get("level") == 1

    fitted = model().fit(X, callback=stop)
    assert fitted.stop_reason_ == "stopped by callback"
    assert fitted.history_[-1]["phase"] == "warmup" and fitted.history_[-1]["level"] == 1


def test_a_warm_start_from_trained_weights_skips_the_warmup(X):
    fitted = model(max_iter=5, warm_start=True).fit(X)
    fitted.fit(X)
    assert {r["phase"] for r in fitted.history_} == {"full"}


def test_bad_values_in_the_sample_name_the_data_row(X):
    bad = X.copy()
    first = _warmup.offset(0, 2)
    bad[first + 2 * 7, 3] = 1.5  # the 8th row of the sample
    with pytest.raises(DataError, match=f"in rows {first + 14};"):
        model().fit(bad)


@pytest.mark.parametrize("name, value, message", [
    ("warmup", "fast", "warmup must be one of 'auto', 'subsample', 'none', got 'fast'"),
    ("warmup_iter", -1, "warmup_iter must be"),
])
def test_bad_warmup_settings_are_one_line_errors(X, name, value, message):
    with pytest.raises(ParameterError, match=message):
        model(**{name: value}).fit(X)


def test_warmup_iter_0_turns_the_warmup_off(X):
    fitted = model(warmup_iter=0).fit(X)
    assert {r["phase"] for r in fitted.history_} == {"full"}


def test_a_level_ends_when_its_held_out_cost_stalls(X):
    fitted = model(warmup_iter=150).fit(X)
    level0 = [r for r in fitted.history_ if r.get("level") == 0]
    checks = [r for r in level0 if "heldout_cost" in r]
    assert len(level0) - 1 < 150  # 16 rows for 60 weights: overfitted long before the budget
    assert checks[-1] is level0[-1] and _warmup.stalled(checks[-2], checks[-1])
    assert not any(_warmup.stalled(a, b) for a, b in zip(checks[:-2], checks[1:-1]))
    assert all((r["iteration"] - level0[0]["iteration"]) % _warmup.WINDOW == 0 for r in checks)


def test_an_interrupt_as_a_level_stalls_resumes_bit_identically(tmp_path, X):
    full = model(warmup_iter=150).fit(X)
    ckpt = tmp_path / "run.ckpt"
    checks = []

    def ctrl_c(model, record):
        if record.get("level") == 0 and "heldout_cost" in record:
            checks.append(record)
            if len(checks) > 1 and _warmup.stalled(checks[-2], checks[-1]):
                os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(TrainingInterrupted):
        model(warmup_iter=150).fit(X, checkpoint=ckpt, callback=ctrl_c)
    assert C.read(ckpt).history[-1] == checks[-1]
    resumed = model(warmup_iter=150).fit(X, checkpoint=ckpt, resume=True)
    assert same_bits(full, resumed)
    assert [r["cost"] for r in resumed.history_] == [r["cost"] for r in full.history_]


def test_a_level_too_small_for_the_model_ends_once_its_progress_is_within_its_gap():
    # The held-out cost follows the level's own (no KAPPA stall), but it is 13%
    # above it and fell by less than half of that gap: the level ends.
    assert _warmup.stalled({"cost": 1.40, "heldout_cost": 1.60},
                           {"cost": 1.38, "heldout_cost": 1.59})
    # The same fall with a gap under GAP (5%) of the held-out cost: it goes on.
    assert not _warmup.stalled({"cost": 0.40, "heldout_cost": 0.41},
                               {"cost": 0.39, "heldout_cost": 0.40})
    # A large gap, but the held-out cost still falls by more than half of it.
    assert not _warmup.stalled({"cost": 2.0, "heldout_cost": 2.3},
                               {"cost": 1.6, "heldout_cost": 1.8})
    # The held-out cost rising stops a level whatever its gap.
    assert _warmup.stalled({"cost": 0.40, "heldout_cost": 0.40},
                           {"cost": 0.39, "heldout_cost": 0.401})
