"""Ctrl-C and SIGTERM: stop after the evaluation in progress, write a checkpoint,
print how to resume, exit 130 / 143; the resumed run is bit-identical."""

import os
import shlex
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from streamae import SparseAutoencoder, TrainingInterrupted
from streamae import _checkpoint as C
from streamae._store import write_array

MAX_ITER = 100
OPTIONS = ["--hidden", "16", "--max-iter", str(MAX_ITER), "--chunk-rows", "1000", "--quiet"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("signals")
    X = np.random.default_rng(5).uniform(0.05, 0.95, size=(4000, 64))
    write_array(root / "data.zarr", X, chunk_rows=1000)
    reference = SparseAutoencoder(n_hidden=16, max_iter=MAX_ITER,
                                  run_options={"chunk_rows": 1000}).fit(
        os.fspath(root / "data.zarr"))
    return root, reference


def _start(root, name, *extra):
    out = root / f"{name}.zarr"
    argv = ["train", os.fspath(root / "data.zarr"), "--out", os.fspath(out), *OPTIONS, *extra]
    proc = subprocess.Popen([sys.executable, "-m", "streamae.cli", *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ckpt = C.default_path(out)
    # --checkpoint-every larger than --max-iter: the only periodic checkpoint is
    # iteration 0, written once the first evaluation is done.
    while not os.path.exists(ckpt):
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.005)
    return proc, out, ckpt


def _interrupt(setup, name, signals):
    root, reference = setup
    proc, out, ckpt = _start(root, name, "--checkpoint-every", "1000")
    time.sleep(0.4)
    assert proc.poll() is None, "the run finished before the signal; make it longer"
    sent = time.perf_counter()
    for sig in signals:
        proc.send_signal(sig)
        time.sleep(0.05)
    stdout, stderr = proc.communicate(timeout=60)
    return proc.returncode, time.perf_counter() - sent, stdout, stderr.strip().splitlines(), \
        out, ckpt


def _resume(setup, out, line):
    """Run the printed resume command; its model must equal the uninterrupted run's."""
    root, reference = setup
    command = shlex.split(line.removeprefix("resume with: "))
    assert command[0] == "streamae" and command[-1] == "--resume"
    done = subprocess.run([sys.executable, "-m", "streamae.cli", *command[1:]],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "resumed from iteration" in done.stdout
    model = SparseAutoencoder.load(out)
    assert model.n_iter_ == MAX_ITER
    for k in ("W1_", "b1_", "W2_", "b2_"):
        assert getattr(model, k).tobytes() == getattr(reference, k).tobytes()


@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
                         ids=["SIGINT", "SIGTERM"])
def test_signal_checkpoints_prints_resume_and_exits(setup, sig, status):
    name = signal.Signals(sig).name
    code, seconds, stdout, err, out, ckpt = _interrupt(setup, name, [sig])
    assert code == status, err
    assert seconds < 10
    assert err[0] == f"streamae: {name} received: stopping after the current evaluation" + (
        " (Ctrl-C again to stop at once)" if sig == signal.SIGINT else "")
    iteration = C.read(ckpt).state.iteration
    assert 0 < iteration < MAX_ITER
    assert err[1] == (f"streamae: interrupted by {name}: checkpoint of iteration {iteration} "
                      f"written to '{ckpt}'")
    assert err[2].startswith("resume with: streamae train ") and len(err) == 3
    assert stdout == "" and os.listdir(out) == ["checkpoint.npz"]  # no model yet
    _resume(setup, out, err[2])


@pytest.mark.slow
def test_second_ctrl_c_abandons_the_evaluation_and_still_checkpoints(tmp_path):
    """Evaluations long enough (200,000 rows) for the second SIGINT to land inside one."""
    X = np.random.default_rng(6).uniform(0.05, 0.95, size=(200_000, 64)).astype(np.float32)
    write_array(tmp_path / "data.zarr", X, chunk_rows=25_000)
    options = ["--hidden", "16", "--max-iter", "4", "--quiet"]
    reference = SparseAutoencoder(n_hidden=16, max_iter=4).fit(
        os.fspath(tmp_path / "data.zarr"))
    out = tmp_path / "model.zarr"
    argv = [sys.executable, "-m", "streamae.cli", "train", os.fspath(tmp_path / "data.zarr"),
            "--out", os.fspath(out), *options, "--checkpoint-every", "1000"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ckpt = C.default_path(out)
    while not os.path.exists(ckpt):
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.005)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    err = stderr.strip().splitlines()
    assert proc.returncode == 130, err
    assert err[-2] == (f"streamae: interrupted by SIGINT: checkpoint of iteration 0 written to "
                       f"'{ckpt}'")
    done = subprocess.run(argv[:-2] + ["--resume"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    model = SparseAutoencoder.load(out)
    for k in ("W1_", "b1_", "W2_", "b2_"):
        assert getattr(model, k).tobytes() == getattr(reference, k).tobytes()


def test_signal_during_the_first_streaming_pass_is_handled(tmp_path, monkeypatch):
    """SIGINT as the first pass over the data starts (the first evaluation,
    which also measures the data's variance; before any iteration): the
    handler is already armed, so the fit ends with TrainingInterrupted (exit
    status 130, nothing to resume), not a bare KeyboardInterrupt."""
    from streamae import _engine

    X = np.random.default_rng(6).uniform(0.05, 0.95, size=(500, 8))
    write_array(tmp_path / "data.zarr", X, chunk_rows=100)
    measure = _engine.Evaluator.measure_variance

    def interrupted(evaluator):
        os.kill(os.getpid(), signal.SIGINT)
        return measure(evaluator)

    monkeypatch.setattr(_engine.Evaluator, "measure_variance", interrupted)
    model = SparseAutoencoder(n_hidden=4, max_iter=5)
    with pytest.raises(TrainingInterrupted) as info:
        model.fit(os.fspath(tmp_path / "data.zarr"), checkpoint=os.fspath(tmp_path / "m.ckpt"))
    assert info.value.exit_status == 130 and info.value.checkpoint is None
    assert not os.path.exists(tmp_path / "m.ckpt")
