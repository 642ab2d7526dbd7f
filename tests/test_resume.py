"""Checkpoints and resume: a resumed fit equals the uninterrupted one bit for bit,
including after SIGKILL at random instants (evaluations, line searches,
checkpoint writes, the final model write)."""

import errno
import glob
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from streamae import CheckpointError, SparseAutoencoder, TrainingInterrupted
from streamae import _checkpoint as C
from streamae._store import write_array

PARAMS = ("W1_", "b1_", "W2_", "b2_")


def same_bits(a, b):
    return all(getattr(a, k).tobytes() == getattr(b, k).tobytes() for k in PARAMS)


def model(max_iter, n_hidden=4, chunk_rows=300, **params):
    """A SparseAutoencoder for these tests: chunks of 300 rows (4 tasks)."""
    return SparseAutoencoder(n_hidden=n_hidden, max_iter=max_iter,
                             run_options={"chunk_rows": chunk_rows}, **params)


@pytest.fixture(scope="module")
def X():
    return np.random.default_rng(7).uniform(0.05, 0.95, size=(1200, 12))


CASES = [
    dict(strategy="one-pass", optimizer="lbfgs", dtype="float64"),
    dict(strategy="two-pass", optimizer="gd", dtype="float32"),
    dict(strategy="cached", optimizer="lbfgs", dtype="float32"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(c.values()))
def test_resume_is_bit_identical(tmp_path, X, case):
    full = model(25, **case).fit(X)
    ckpt = tmp_path / "run.ckpt"
    part = model(11, **case).fit(X, checkpoint=ckpt, checkpoint_every=4)
    assert part.n_iter_ == 11 and C.read(ckpt).state.iteration == 11  # the final write
    resumed = model(25, **case).fit(X, checkpoint=ckpt, checkpoint_every=4, resume=True)
    assert resumed.resumed_from_ == 11
    assert same_bits(full, resumed)
    assert resumed.n_iter_ == full.n_iter_ and resumed.evaluations_ == full.evaluations_
    assert [r["cost"] for r in resumed.history_] == [r["cost"] for r in full.history_]
    assert resumed.rho_hat_.tobytes() == full.rho_hat_.tobytes()


def test_checkpoint_holds_the_whole_state(tmp_path, X):
    ckpt = tmp_path / "run.ckpt"
    fitted = model(6, random_state=3).fit(X, checkpoint=ckpt, checkpoint_every=3)
    saved = C.read(ckpt)
    state, meta = saved.state, saved.meta
    assert state.iteration == 6 and len(state.s_hist) == len(state.y_hist) > 0
    assert state.theta.dtype == np.float64 and state.grad.shape == state.theta.shape
    assert meta["format"] == "streamae-checkpoint" and meta["format_version"] == 1
    assert meta["model"] == {"n_visible": 12, "n_hidden": 4, "rho": 0.01, "beta": 3.0,
                             "weight_decay": 1e-4, "dtype": "float32", "seed": 3}
    assert meta["run"]["chunk_rows"] == 300 and meta["run"]["history_size"] == 100
    assert meta["data"]["shape"] == [1200, 12] and "content_sha256" in meta["data"]
    assert meta["random_state"]["seed"] == 3
    assert meta["random_state"]["after_init"]["bit_generator"] == "PCG64"
    assert len(meta["history"]) == 7 and meta["evaluations"] == fitted.evaluations_
    assert saved.rho_hat.tobytes() == fitted.rho_hat_.tobytes()


def test_zarr_fingerprint_names_path_chunks_and_metadata(tmp_path, X):
    store = write_array(tmp_path / "x.zarr", X, chunk_rows=300)
    ckpt = tmp_path / "run.ckpt"
    SparseAutoencoder(n_hidden=3, max_iter=2).fit(str(tmp_path / "x.zarr"), checkpoint=ckpt,
                                                  checkpoint_every=1)
    data = C.read(ckpt).meta["data"]
    assert data["path"] == str(tmp_path / "x.zarr") and data["chunks"] == [300, 12]
    assert data["dtype"] == "float64" and len(data["metadata_sha256"]) == 64
    del store


def test_resume_can_extend_max_iter_and_missing_checkpoint_starts_afresh(tmp_path, X):
    full = model(12).fit(X)
    ckpt = tmp_path / "run.ckpt"
    fresh = model(5).fit(X, checkpoint=ckpt, resume=True, checkpoint_every=5)
    assert fresh.resumed_from_ is None
    more = model(12).fit(X, checkpoint=ckpt, resume=True)
    assert more.resumed_from_ == 5 and same_bits(full, more)


def test_resume_of_a_converged_run_does_nothing(tmp_path, X):
    ckpt = tmp_path / "run.ckpt"
    kw = dict(checkpoint=ckpt, checkpoint_every=50)
    first = model(1000, n_hidden=2).fit(X, **kw)
    assert "tolerance" in first.stop_reason_ or "line search" in first.stop_reason_
    again = model(5000, n_hidden=2).fit(X, resume=True, **kw)
    assert again.n_iter_ == first.n_iter_ and same_bits(first, again)
    assert again.stop_reason_ == first.stop_reason_


def test_interrupt_in_fit_writes_checkpoint_and_resumes(tmp_path, X):
    full = model(15).fit(X)
    ckpt = tmp_path / "run.ckpt"

    def ctrl_c_at_3(model, record):
        if record["iteration"] == 3:
            os.kill(os.getpid(), signal.SIGINT)

    stopped = model(15)
    handler = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN under nohup
    with pytest.raises(TrainingInterrupted) as info:
        stopped.fit(X, checkpoint=ckpt, callback=ctrl_c_at_3)
    assert info.value.exit_status == 130 and info.value.iteration == 3
    assert info.value.checkpoint == os.fspath(ckpt)
    assert stopped.n_iter_ == 3 and stopped.stop_reason_ == "interrupted by SIGINT at iteration 3"
    assert signal.getsignal(signal.SIGINT) == handler  # restored
    resumed = model(15).fit(X, checkpoint=ckpt, resume=True)
    assert resumed.resumed_from_ == 3 and same_bits(full, resumed)


def test_failed_checkpoint_write_keeps_the_previous_one(tmp_path, X, monkeypatch):
    ckpt = tmp_path / "run.ckpt"
    kw = dict(checkpoint=ckpt, checkpoint_every=2)
    model(4).fit(X, **kw)
    before = ckpt.read_bytes()
    real_fsync = os.fsync

    def full_disk(fd):
        if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(".run.ckpt.tmp-"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(CheckpointError, match=r"cannot write checkpoint .*No space left on "
                       r"device\); the previous checkpoint \(iteration 4\) is intact"):
        model(8).fit(X, resume=True, **kw)
    assert ckpt.read_bytes() == before
    assert glob.glob(str(tmp_path / ".run.ckpt.tmp-*")) == []


# ------------------------------------------------------------------ SIGKILL at random instants

TRAIN = ["--hidden", "16", "--max-iter", "40", "--chunk-rows", "1000", "--quiet",
         "--checkpoint-every", "1"]


@pytest.fixture(scope="module")
def kill_setup(tmp_path_factory):
    """A store, and an uninterrupted reference run timed from its first checkpoint."""
    root = tmp_path_factory.mktemp("kill")
    X = np.random.default_rng(11).uniform(0.05, 0.95, size=(4000, 64))
    write_array(root / "data.zarr", X, chunk_rows=1000)
    out = root / "reference.zarr"
    t0 = time.perf_counter()
    proc = subprocess.Popen(_train(root / "data.zarr", out), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    ckpt = C.default_path(out)
    while not os.path.exists(ckpt) and proc.poll() is None:
        time.sleep(0.002)
    first = time.perf_counter()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    end = time.perf_counter()
    reference = SparseAutoencoder.load(out)
    assert reference.n_iter_ == 40
    return root, reference, first - t0, end - first


def _train(data, out, *extra):
    return [sys.executable, "-m", "streamae.cli", "train", os.fspath(data), "--out",
            os.fspath(out), *TRAIN, *extra]


def _kill_and_resume(root, reference, startup, training, instant, name):
    """Start a run, SIGKILL it at ``instant`` (0..1 of its lifetime), then --resume.

    Returns where the kill landed.
    """
    out = root / f"{name}.zarr"
    ckpt = C.default_path(out)
    proc = subprocess.Popen(_train(root / "data.zarr", out), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    t0 = time.perf_counter()
    if instant < 0.1:  # during start-up, before any checkpoint exists
        time.sleep(instant / 0.1 * startup)
    else:
        while not os.path.exists(ckpt) and proc.poll() is None:
            time.sleep(0.002)
        time.sleep((instant - 0.1) / 0.9 * training)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=120)
    killed_at = time.perf_counter() - t0
    where = ("after exit" if proc.returncode == 0
             else "checkpoint write" if glob.glob(os.path.join(out, ".checkpoint.npz.tmp-*"))
             else "model write" if glob.glob(os.path.join(root, f".{name}.zarr.tmp-*"))
             else "start-up" if not os.path.exists(ckpt)
             else f"iteration {C.read(ckpt).state.iteration}")
    resume = subprocess.run(_train(root / "data.zarr", out, "--resume"), capture_output=True,
                            timeout=120)
    assert resume.returncode == 0, (where, resume.stderr.decode())
    model = SparseAutoencoder.load(out)
    assert same_bits(model, reference), f"kill at {killed_at:.3f} s ({where}): weights differ"
    assert model.n_iter_ == reference.n_iter_
    assert not glob.glob(os.path.join(root, f".{name}.*tmp-*")), "temporary files left behind"
    assert not glob.glob(os.path.join(out, ".*tmp-*")), "temporary files left behind"
    return where


def _kill_test(kill_setup, count, seed):
    root, reference, startup, training = kill_setup
    instants = np.random.default_rng(seed).uniform(0.0, 1.0, size=count)
    landed = [_kill_and_resume(root, reference, startup, training, t, f"k{seed}-{i}")
              for i, t in enumerate(instants)]
    print("kills landed in:", landed)
    return landed


@pytest.mark.slow  # the default suite keeps the SIGKILL at a chosen point (below)
def test_sigkill_at_3_random_instants_then_resume_is_bit_identical(kill_setup):
    _kill_test(kill_setup, 3, seed=2024)


@pytest.mark.slow
def test_sigkill_at_20_random_instants_then_resume_is_bit_identical(kill_setup):
    landed = _kill_test(kill_setup, 20, seed=6)
    assert any(w.startswith("iteration") for w in landed)


# ------------------------------------------------------------------ SIGKILL at chosen points

CRASH = """
import os, signal, sys
import streamae._atomic as A
module, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
module = {"os": os, "atomic": A}[module]
real, calls = getattr(module, name), [0]
def crash_on_call(*args, **kwargs):
    calls[0] += 1
    if calls[0] == count:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*args, **kwargs)
setattr(module, name, crash_on_call)
from streamae.cli import main
sys.exit(main(sys.argv[4:]))
"""

POINTS = [  # (where, module, function, the call that dies)
    ("the 6th checkpoint written and fsync'ed, not yet renamed", "os", "replace", 6),
    pytest.param("the 4th checkpoint written, before its fsync", "os", "fsync", 7,
                 marks=pytest.mark.slow),
    pytest.param("model written, before it is moved into place", "atomic", "publish", 1,
                 marks=pytest.mark.slow),
    pytest.param("model renamed into place, before the directory fsync", "atomic", "fsync_dir",
                 1, marks=pytest.mark.slow),
]


@pytest.mark.parametrize("where, module, name, count", POINTS)
def test_sigkill_at_a_chosen_point_then_resume_is_bit_identical(kill_setup, where, module,
                                                                  name, count):
    root, reference, _, _ = kill_setup
    out = root / f"crash-{name}-{count}.zarr"
    argv = _train(root / "data.zarr", out)[3:]  # after "python -m streamae.cli"
    crashed = subprocess.run([sys.executable, "-c", CRASH, module, name, str(count), *argv],
                             capture_output=True, timeout=120)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr.decode()
    resume = subprocess.run(_train(root / "data.zarr", out, "--resume"), capture_output=True,
                            timeout=120)
    assert resume.returncode == 0, resume.stderr.decode()
    assert same_bits(SparseAutoencoder.load(out), reference), where
    assert not glob.glob(os.path.join(root, f".{out.name}*tmp-*"))
    assert not glob.glob(os.path.join(out, ".*tmp-*"))


def _vanishing_store(tmp_path, X, at_iteration):
    """A store of X, and a fit callback that moves it away after ``at_iteration``."""
    store = tmp_path / "x.zarr"
    write_array(store, X, chunk_rows=300)

    def move_away(model, record):
        if record["iteration"] == at_iteration:
            os.rename(store, tmp_path / "away.zarr")

    return os.fspath(store), move_away


def test_data_lost_mid_fit_keeps_a_checkpoint_and_resumes_exactly(tmp_path, X):
    """The store disappears after iteration 2 (no periodic checkpoints): the
    DataError comes with the checkpoint of iteration 2, and resuming once the
    store is back gives the uninterrupted run's bits."""
    store, move_away = _vanishing_store(tmp_path, X, 2)
    kw = dict(checkpoint=tmp_path / "run.ckpt")
    reference = SparseAutoencoder(n_hidden=4, max_iter=8).fit(store)
    from streamae import DataError

    with pytest.raises(DataError, match=r"is gone on .*; the checkpoint of iteration 2 was "
                                        r"written to '.*run\.ckpt': fix the cause, then "
                                        r"resume") as info:
        SparseAutoencoder(n_hidden=4, max_iter=8).fit(store, callback=move_away, **kw)
    assert info.value.checkpoint == os.fspath(tmp_path / "run.ckpt")
    assert info.value.iteration == 2
    os.rename(tmp_path / "away.zarr", store)
    resumed = SparseAutoencoder(n_hidden=4, max_iter=8).fit(store, resume=True, **kw)
    assert resumed.resumed_from_ == 2 and same_bits(resumed, reference)


def test_cli_prints_how_to_resume_after_losing_the_data(tmp_path, X, monkeypatch, capsys):
    from streamae import _fitloop
    from streamae.cli import main

    store, move_away = _vanishing_store(tmp_path, X, 1)
    record = _fitloop.TrainingRun._record

    def record_then_move(self, info, phase=None):
        out = record(self, info, phase)
        move_away(self.model, out)
        return out

    monkeypatch.setattr(_fitloop.TrainingRun, "_record", record_then_move)
    out = os.fspath(tmp_path / "model.zarr")
    assert main(["train", store, "--out", out, "--hidden", "4", "--max-iter", "5",
                 "--quiet"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("streamae: error: the Zarr store") and \
        "the checkpoint of iteration 1 was written to" in err[0]
    assert err[1] == (f"resume with: streamae train {store} --out {out} --hidden 4 "
                      "--max-iter 5 --quiet --resume")
    assert os.listdir(out) == ["checkpoint.npz"]  # the model folder holds only the checkpoint


# ------------------------------------------------------------------ a finished run's checkpoint

def test_a_finished_fit_writes_its_final_state(tmp_path, X):
    ckpt = tmp_path / "run.ckpt"
    finished = model(5).fit(X, checkpoint=ckpt)  # no checkpoint_every
    saved = C.read(ckpt)
    assert saved.state.iteration == 5 and saved.state.theta.tobytes() == \
        np.concatenate([getattr(finished, k).ravel() for k in PARAMS]).tobytes()


def test_resume_after_finish_returns_the_final_weights(tmp_path, X, monkeypatch):
    ckpt = tmp_path / "run.ckpt"
    first = model(5).fit(X, checkpoint=ckpt)
    before = ckpt.read_bytes()
    from streamae import _engine

    def no_evaluation(*args, **kwargs):
        raise AssertionError("a finished run was evaluated again")

    monkeypatch.setattr(_engine.Evaluator, "__call__", no_evaluation)
    again = model(5).fit(X, checkpoint=ckpt, resume=True)
    assert same_bits(first, again) and again.n_iter_ == 5 and again.resumed_from_ == 5
    assert again.history_ == first.history_ and ckpt.read_bytes() == before


def test_resume_with_a_larger_max_iter_extends_a_finished_fit(tmp_path, X):
    full = model(9).fit(X)
    ckpt = tmp_path / "run.ckpt"
    model(4).fit(X, checkpoint=ckpt)
    extended = model(9).fit(X, checkpoint=ckpt, resume=True)
    assert extended.resumed_from_ == 4 and same_bits(full, extended)
    assert extended.evaluations_ == full.evaluations_
    assert [r["cost"] for r in extended.history_] == [r["cost"] for r in full.history_]
