"""tol, a held-out validation set and early stopping: checks against a NumPy
reference, the training unchanged by them, the stopping rule, bit-identity
across schedulers and resumes, the command line and the cost chart."""

import json
import os
import signal
import subprocess
import sys
import warnings

import dask.array as da
import numpy as np
import pandas as pd
import pytest
import zarr
from numpy.testing import assert_allclose
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import make_pipeline

from streamae import (
    CheckpointError,
    DataError,
    ParameterError,
    SparseAutoencoder,
    TrainingInterrupted,
    _validation_set,
)
from streamae import _checkpoint as C
from streamae._atomic import write_bytes
from streamae._metrics import read_metrics
from streamae._objective import make_hyper, reference_cost_and_grad
from streamae._plots import cost_figure
from streamae.cli import main

PARAMS = ("W1_", "b1_", "W2_", "b2_")
# A problem where the validation cost levels off early: 60 training rows of a
# 3-factor signal plus noise, 600 held-out rows of the same signal.
SETTINGS = dict(n_hidden=12, rho=0.1, beta=0.1, weight_decay=1e-4, dtype="float64",
                warmup="none")


def same_bits(a, b):
    return all(getattr(a, k).tobytes() == getattr(b, k).tobytes() for k in PARAMS)


def signal_rows(rng, m):
    factors = rng.uniform(size=(m, 3))
    mixing = np.linspace(0, 1, 3 * 16).reshape(3, 16)
    return np.clip(0.2 + 0.5 * factors @ mixing / 3 + rng.normal(0, 0.08, (m, 16)), 0.02, 0.98)


@pytest.fixture(scope="module")
def XV():
    rng = np.random.default_rng(3)
    return signal_rows(rng, 60), signal_rows(rng, 600)


def model(max_iter=40, scheduler=None, **params):
    """Chunks of 20 rows: 3 tasks over X, 30 over V."""
    return SparseAutoencoder(max_iter=max_iter, **{**SETTINGS, **params},
                             run_options={"chunk_rows": 20, "scheduler": scheduler})


def early(max_iter=150, **params):
    """Early stopping that stops this problem after about 28 iterations."""
    return model(max_iter, **{"early_stopping": True, "n_iter_no_change": 5, **params})


def without_times(history):
    return [{k: v for k, v in r.items() if k not in ("seconds", "samples_per_s")}
            for r in history]


def checks(history):
    return [(r["iteration"], r["validation_cost"]) for r in history if "validation_cost" in r]


# ----------------------------------------------------------------- tol

def test_tol_is_the_gradient_tolerance(XV):
    X, _ = XV
    default, loose = model(60).fit(X), model(60, tol=1e-3).fit(X)
    assert loose.stop_reason_ == "gradient below tolerance (max |g| <= 0.001)"
    assert loose.converged_ and loose.n_iter_ < default.n_iter_
    # Until the looser rule fires, the two fits are the same.
    assert [r["cost"] for r in loose.history_] == \
        [r["cost"] for r in default.history_[:len(loose.history_)]]
    assert np.abs(loose.cost_and_grad(X)[1]["W1"]).max() <= 1e-3


def test_default_tol_keeps_the_fit_and_the_warning_names_tol(XV):
    X, _ = XV
    with pytest.warns(ConvergenceWarning,
                      match=r"above tol=1e-05; raise max_iter for a converged fit$"):
        fitted = model(5).fit(X)
    assert same_bits(fitted, model(5, tol=1e-5).fit(X))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a tolerance the fit reached: no warning
        model(5, tol=10.0).fit(X)


@pytest.mark.parametrize("name, value, message", [
    ("tol", -1e-3, "tol must be a finite number >= 0, got -0.001"),
    ("tol", float("nan"), "tol must be a finite number >= 0, got nan"),
    ("tol", "small", "tol must be a finite number >= 0, got 'small'"),
    ("validation_every", 0, "validation_every must be an integer >= 1, got 0"),
    ("n_iter_no_change", 0, "n_iter_no_change must be an integer >= 1, got 0"),
    ("early_stopping", "yes", "early_stopping must be True or False, got 'yes'"),
])
def test_bad_settings_are_one_line_errors(XV, name, value, message):
    X, V = XV
    with pytest.raises(ParameterError, match=message) as info:
        model(**{name: value}).fit(X, validation=V)
    assert "\n" not in str(info.value)


def test_early_stopping_without_validation_names_the_argument(XV):
    X, _ = XV
    with pytest.raises(ParameterError) as info:
        early().fit(X)
    assert str(info.value) == ("`early_stopping=True` needs a validation set: give held-out "
                               "rows (never trained on, with the data's columns) as "
                               "`validation=DATA`")


# ----------------------------------------------------------------- checks

def test_checks_match_a_numpy_reference_and_leave_the_training_unchanged(XV):
    X, V = XV
    seen = {}

    def keep(fitted, record):
        seen[record["iteration"]] = (fitted.params_, record)

    plain = model(12).fit(X)
    checked = model(12, validation_every=3).fit(X, validation=V, callback=keep)
    assert same_bits(plain, checked)
    assert [r["cost"] for r in plain.history_] == [r["cost"] for r in checked.history_]
    assert [i for i, _ in checks(checked.history_)] == [0, 3, 6, 9, 12]
    hyper = make_hyper(SETTINGS["rho"], SETTINGS["beta"], SETTINGS["weight_decay"])
    for iteration in (3, 6, 9, 12):
        params, record = seen[iteration]
        reference, _ = reference_cost_and_grad(V, params, hyper)
        assert_allclose(record["validation_cost"], reference, rtol=1e-12)
        assert 0 < record["validation_reconstruction"] < record["validation_cost"]
    assert checked.best_validation_iteration_ == min(checks(checked.history_),
                                                     key=lambda c: c[1])[0]
    assert plain.best_validation_iteration_ is None


def test_warmup_records_get_no_check(XV):
    X, V = XV
    fitted = model(4, warmup="subsample", warmup_iter=4).fit(X, validation=V)
    assert {r["phase"] for r in fitted.history_} == {"warmup", "full"}
    assert all(("validation_cost" in r) == (r["phase"] == "full") for r in fitted.history_)


@pytest.mark.parametrize("kind", ["path", "zarr", "dask", "dataframe"])
def test_validation_takes_every_kind_of_input(XV, tmp_path, write_zarr, kind):
    X, V = XV
    reference = checks(model(3).fit(X, validation=V).history_)
    if kind == "dataframe":
        X = pd.DataFrame(X, columns=[f"c{j}" for j in range(16)])
        V = pd.DataFrame(V, columns=X.columns)
    elif kind == "dask":
        V = da.from_array(V, chunks=(20, 16))
    else:
        V = write_zarr(V, 20, name="v.zarr")
        V = zarr.open_array(V, mode="r") if kind == "zarr" else V
    got = checks(model(3).fit(X, validation=V).history_)
    assert [i for i, _ in got] == [i for i, _ in reference]
    assert_allclose([c for _, c in got], [c for _, c in reference], rtol=1e-12)


def test_validation_of_another_width_is_refused_before_training(XV):
    X, V = XV
    with pytest.raises(DataError, match=r"^the validation data has 15 features, but X has 16 "
                       r"\(validation is the NumPy array\); give held-out rows of the same "
                       r"columns$"):
        model().fit(X, validation=V[:, :15])


def test_bad_values_in_the_validation_data_name_it(XV):
    X, V = XV
    bad = V.copy()
    bad[123, 4] = 1.5
    with pytest.raises(DataError, match=r"^validation data: .*rows 123\b"):
        model().fit(X, validation=bad)


def test_a_pipeline_passes_the_validation_set(XV):
    X, V = XV
    pipe = make_pipeline(early(), LinearRegression())
    pipe.fit(X, X[:, 0], sparseautoencoder__validation=V)
    fitted = pipe[0]
    assert fitted.stop_reason_.startswith("early stopping") and fitted.converged_


# ----------------------------------------------------------------- early stopping

def test_early_stopping_stops_on_the_rule_and_keeps_the_best_weights(XV):
    X, V = XV
    weights = {}

    def keep(fitted, record):
        weights[record["iteration"]] = fitted.params_

    fitted = early().fit(X, validation=V, callback=keep)
    costs = [c for _, c in checks(fitted.history_)]
    # The rule, written out: stop at the first check ending 5 checks that each
    # fail to beat the best cost before them by tol.
    improved = [c < min(costs[:i], default=np.inf) - 1e-5 for i, c in enumerate(costs)]
    stop = next(i for i in range(5, len(costs)) if not any(improved[i - 4:i + 1]))
    assert len(costs) == stop + 1 and fitted.n_iter_ == stop < 150
    assert fitted.stop_reason_.startswith("early stopping: the validation cost did not "
                                          "improve by at least tol=1e-05 in 5 consecutive")
    assert fitted.converged_
    best = int(np.argmin(costs))
    assert fitted.best_validation_iteration_ == best < fitted.n_iter_
    assert all(fitted.params_[k].tobytes() == weights[best][k].tobytes() for k in weights[best])
    assert fitted.cost_and_grad(X)[0] == fitted.history_[best]["cost"]
    assert float(fitted.rho_hat_.mean()) == fitted.history_[best]["rho_hat_mean"]


def test_early_stopping_counts_checks_not_iterations(XV):
    X, V = XV
    every = early(validation_every=4).fit(X, validation=V)
    done = checks(every.history_)
    assert all(i % 4 == 0 for i, _ in done) and every.n_iter_ == done[-1][0]
    assert _validation_set.progress(every.history_, 1e-5).since == 5


def test_early_stopping_ends_with_the_best_weights_also_at_max_iter(XV):
    X, V = XV
    cut = early(max_iter=27, n_iter_no_change=50)
    with pytest.warns(ConvergenceWarning):
        cut.fit(X, validation=V)
    assert cut.stop_reason_ == "reached max_iter=27" and not cut.converged_
    best = cut.best_validation_iteration_
    assert best < 27  # the validation cost levelled off before
    assert cut.cost_and_grad(X)[0] == cut.history_[best]["cost"]


@pytest.mark.parametrize("scheduler", ["synchronous", "processes"])
def test_early_stopping_is_bit_identical_across_schedulers(XV, scheduler):
    X, V = XV
    threads = early(scheduler="threads").fit(X, validation=V)
    other = early(scheduler=scheduler).fit(X, validation=V)
    assert same_bits(threads, other) and other.n_iter_ == threads.n_iter_
    assert checks(other.history_) == checks(threads.history_)


# ----------------------------------------------------------------- resume

def _interrupt_at(iteration):
    def ctrl_c(fitted, record):
        if record["iteration"] == iteration:
            os.kill(os.getpid(), signal.SIGINT)
    return ctrl_c


def test_resume_restores_the_counters_from_the_checkpoint(XV, tmp_path):
    X, V = XV
    full = early().fit(X, validation=V)
    # Interrupted after checks without improvement: the count must come back.
    at = full.n_iter_ - 2
    assert _validation_set.progress(full.history_[:at + 1], 1e-5).since > 0
    ckpt = tmp_path / "run.ckpt"
    with pytest.raises(TrainingInterrupted):
        early().fit(X, validation=V, checkpoint=ckpt, callback=_interrupt_at(at))
    assert C.read(ckpt).state.iteration == at and "best_theta" in C.read(ckpt).arrays
    resumed = early().fit(X, validation=V, checkpoint=ckpt, resume=True)
    assert same_bits(full, resumed) and resumed.resumed_from_ == at
    assert without_times(resumed.history_) == without_times(full.history_)
    assert resumed.stop_reason_ == full.stop_reason_
    assert resumed.best_validation_iteration_ == full.best_validation_iteration_
    # The finished run resumed again: nothing to do, the best weights again.
    again = early(max_iter=500).fit(X, validation=V, checkpoint=ckpt, resume=True)
    assert same_bits(full, again) and again.n_iter_ == full.n_iter_


def test_a_check_cut_off_by_an_interrupt_runs_on_resume(XV, tmp_path):
    X, V = XV
    full = early().fit(X, validation=V)
    ckpt = tmp_path / "run.ckpt"
    with pytest.raises(TrainingInterrupted):
        early().fit(X, validation=V, checkpoint=ckpt, callback=_interrupt_at(9))
    # As if the interrupt had come between iteration 9 and its check.
    saved = C.read(ckpt)
    history = saved.history
    for key in ("validation_cost", "validation_reconstruction"):
        del history[-1][key]
    arrays = {k: v for k, v in saved.arrays.items()}
    meta = {k: v for k, v in saved.meta.items()
            if k in ("model", "run", "data", "random_state", "elapsed")}
    write_bytes(ckpt, C.encode(saved.state, saved.rho_hat, {**meta, "history": history},
                               arrays), "checkpoint")
    resumed = early().fit(X, validation=V, checkpoint=ckpt, resume=True)
    assert same_bits(full, resumed) and checks(resumed.history_) == checks(full.history_)


def test_an_interrupt_in_the_warmup_resumes_to_the_same_early_stop(XV, tmp_path):
    X, V = XV
    warm = dict(warmup="subsample", warmup_iter=4)
    full = early(**warm).fit(X, validation=V)
    assert {r["phase"] for r in full.history_} == {"warmup", "full"}
    ckpt = tmp_path / "run.ckpt"

    def ctrl_c(fitted, record):
        if record["phase"] == "warmup" and record["iteration"] == 2:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(TrainingInterrupted):
        early(**warm).fit(X, validation=V, checkpoint=ckpt, callback=ctrl_c)
    assert C.read(ckpt).state.phase == "warmup"
    resumed = early(**warm).fit(X, validation=V, checkpoint=ckpt, resume=True)
    assert same_bits(full, resumed) and resumed.stop_reason_ == full.stop_reason_
    assert without_times(resumed.history_) == without_times(full.history_)


def test_resuming_with_other_validation_data_is_refused(XV, tmp_path):
    X, V = XV
    ckpt = tmp_path / "run.ckpt"
    early(max_iter=3).fit(X, validation=V, checkpoint=ckpt)
    with pytest.raises(CheckpointError, match="validation_sha256"):
        early(max_iter=6).fit(X, validation=V[:300], checkpoint=ckpt, resume=True)
    with pytest.raises(CheckpointError, match="n_iter_no_change 5 now 6"):
        early(max_iter=6, n_iter_no_change=6).fit(X, validation=V, checkpoint=ckpt,
                                                  resume=True)


def test_save_and_load_keep_the_best_check(XV, tmp_path):
    X, V = XV
    fitted = early().fit(X, validation=V)
    fitted.save(tmp_path / "m.zarr")
    loaded = SparseAutoencoder.load(tmp_path / "m.zarr")
    assert loaded.best_validation_iteration_ == fitted.best_validation_iteration_
    assert loaded.get_params()["early_stopping"] is True and loaded.get_params()["tol"] == 1e-5
    assert same_bits(fitted, loaded)
    records = read_metrics(tmp_path / "m.zarr")
    assert checks(records) == checks(fitted.history_)


# ----------------------------------------------------------------- CLI and chart

def test_train_with_validation_and_early_stopping(XV, tmp_path, write_zarr, capsys):
    X, V = XV
    data, valid = write_zarr(X, 20, name="x.zarr"), write_zarr(V, 20, name="v.zarr")
    out = tmp_path / "m.zarr"
    rc = main(["train", data, "--out", str(out), "--hidden", "12", "--rho", "0.1",
               "--beta", "0.1", "--dtype", "float64", "--warmup", "none", "--max-iter", "150",
               "--validation", valid, "--early-stopping", "--n-iter-no-change", "5",
               "--tol", "1e-5", "--quiet"])
    assert rc == 0
    printed = capsys.readouterr().out
    python = early().fit(X, validation=V)
    best = python.best_validation_iteration_
    assert f"best validation cost {python.history_[best]['validation_cost']:.6g} at " \
           f"iteration {best}" in printed
    assert "early stopping" in printed
    with open(str(out).replace(".zarr", ".metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    assert_allclose([c for _, c in checks(records)], [c for _, c in checks(python.history_)],
                    rtol=1e-12)


def test_train_early_stopping_without_validation_is_one_line(XV, tmp_path, write_zarr,
                                                              capsys):
    data = write_zarr(XV[0], 20, name="x.zarr")
    rc = main(["train", data, "--out", str(tmp_path / "m.zarr"), "--early-stopping",
               "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert err.strip() == ("streamae: error: --early-stopping needs a validation set: give "
                           "held-out rows (never trained on, with the data's columns) as "
                           "--validation DATA")
    assert not os.path.exists(tmp_path / "m.zarr")


def test_cost_chart_draws_the_validation_cost(XV):
    X, V = XV
    history = model(9, validation_every=3).fit(X, validation=V).history_
    lines = {line.get_label(): line for line in cost_figure(history).axes[0].lines}
    # At the checks' passes over the data, as the cost.
    assert list(lines["validation cost"].get_xdata()) == \
        [r["data_passes"] for r in history if r["iteration"] in (0, 3, 6, 9)]
    assert list(lines["validation cost"].get_ydata()) == [c for _, c in checks(history)]
    assert "validation cost" not in {line.get_label()
                                     for line in cost_figure(model(3).fit(X).history_)
                                     .axes[0].lines}


# ----------------------------------------------------------------- settings to start from

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETTINGS_SCRIPT = os.path.join(ROOT, "benchmarks", "settings.py")


def _settings_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("settings_script", SETTINGS_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_settings_script_runs_and_renders_its_table(tmp_path):
    doc = tmp_path / "page.md"
    script = _settings_module()
    doc.write_text(f"before\n{script.BEGIN}\nOLD TABLE\n{script.END}\nafter\n")
    proc = subprocess.run([sys.executable, SETTINGS_SCRIPT, "--quick", "--out",
                           str(tmp_path / "out"), "--doc", str(doc)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "settings.json").read_text())
    assert [r["label"] for r in report["digits"]] == [label for label, _ in script.DIGITS]
    assert [r["label"] for r in report["patches"]] == [label for label, _ in script.PATCHES]
    assert all(0 <= r["accuracy"] <= 1 for r in report["digits"])
    for row in report["patches"]:
        assert 1 <= row["iterations"] <= 10 and row["best_validation_cost"] > 0
        assert row["validation_cost"] >= row["best_validation_cost"] * (1 - 1e-12)
    text = doc.read_text()
    assert "OLD TABLE" not in text and script.markdown(report) in text
    assert text.startswith("before\n") and text.endswith("after\n")


def test_the_docs_table_is_the_committed_results():
    script = _settings_module()
    with open(os.path.join(ROOT, "benchmarks", "results", "settings.json")) as f:
        report = json.load(f)
    assert not report["quick"]
    with open(os.path.join(ROOT, "docs", "api.md"), encoding="utf-8") as f:
        assert script.BEGIN + "\n\n" + script.markdown(report) in f.read()
