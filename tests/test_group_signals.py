"""Ctrl-C and SIGTERM to the whole process group of `streamae train --workers 2`.

A terminal's Ctrl-C and a job scheduler's SIGTERM (``timeout``, ``docker
stop``, batch systems) go to every process of the foreground process group,
which includes the worker processes of the LocalCluster that streamae starts.
These tests do what the terminal does: the CLI runs in its own session
(``start_new_session=True``) and the signal goes to the group
(``os.killpg``) at seeded random instants, from the start of the cluster's
start-up through the first pass into the iterations. Each run must
exit with 130 (SIGINT) or 143 (SIGTERM) within a generous bound (a hang
detector, not a benchmark), print streamae's lines only (no worker
tracebacks, no log lines), leave no process of its group behind, and resume
to weights bit-identical to an uninterrupted run.
"""

import os
import random
import re
import shlex
import signal
import subprocess
import sys
import time

import psutil
import pytest
from cluster_fixtures import make_store, wait_for

from streamae import SparseAutoencoder
from streamae import _checkpoint as C
from streamae._objective import PARAM_NAMES

pytest.importorskip("distributed")

ROWS, COLS, CHUNK, HIDDEN = 20_000, 64, 2_500, 16
#: Far more iterations than the window in which signals are sent: the run is
#: always interrupted, and resumed to a few iterations past its checkpoint.
MAX_ITER = 100_000
OPTIONS = ["--hidden", str(HIDDEN), "--max-iter", str(MAX_ITER), "--workers", "2"]
#: Instants are drawn within WINDOW seconds of the first process the CLI
#: starts (the cluster's start-up begins: start-up, the first pass,
#: the first iterations), or within ITERATIONS seconds of the checkpoint of
#: iteration 0 (iterations, whatever the machine's load made start-up cost).
WINDOW, ITERATIONS = 10.0, 3.0
#: Hang detector: seconds from the signal to the exit.
EXIT_BOUND = 10.0
SEED = 16


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("group-signals")
    return make_store(root / "data.zarr", ROWS, COLS, CHUNK, seed=3)


def _start(data, out, *extra):
    argv = [sys.executable, "-m", "streamae.cli", "train", data, "--out", os.fspath(out),
            *OPTIONS, *extra]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _first_child(proc, timeout=60):
    """Wait until the CLI starts its first process (the cluster's start-up)."""
    parent = psutil.Process(proc.pid)
    wait_for(lambda: proc.poll() is not None or parent.children(), timeout,
             "the CLI to start the local cluster")
    assert proc.poll() is None, proc.communicate()


def _group_gone(pgid):
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return all(p.status() == psutil.STATUS_ZOMBIE for p in psutil.process_iter()
               if _pgid(p.pid) == pgid)


def _pgid(pid):
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def _iteration_0(proc, out, timeout=120):
    """Wait until the checkpoint of iteration 0 is written (--checkpoint-every 1):
    the cluster is up, and the first evaluation is done."""
    ckpt = C.default_path(out)
    wait_for(lambda: proc.poll() is not None or os.path.exists(ckpt), timeout,
             "the checkpoint of iteration 0")
    assert proc.poll() is None, proc.communicate()


def interrupt(data, out, sig, instant, *extra):
    """Run the CLI, signal its process group at ``instant``, (anchor, delay): ``delay``
    s after the cluster's start-up began ("start-up") or after iteration 0
    ("iterations"); return (exit status, seconds to exit, stderr lines)."""
    anchor, delay = instant
    if anchor == "iterations":
        extra = (*extra, "--checkpoint-every", "1")
    proc = _start(data, out, *extra)
    try:
        _first_child(proc)
        if anchor == "iterations":
            _iteration_0(proc, out)
        time.sleep(delay)
        assert proc.poll() is None, "the run ended before the signal"
        sent = time.monotonic()
        os.killpg(proc.pid, sig)
        try:
            _, stderr = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"no exit within 60 s of {signal.Signals(sig).name} at {delay:.2f} s")
        seconds = time.monotonic() - sent
        wait_for(lambda: _group_gone(proc.pid), 20, "the workers and the tracker to exit")
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    return proc.returncode, seconds, _terminal_lines(stderr)


def _terminal_lines(text):
    """What a terminal shows: each line after its last carriage return (the
    progress bars redraw themselves), empty lines dropped."""
    lines = [line.rsplit("\r", 1)[-1].rstrip() for line in text.split("\n")]
    return [line for line in lines if line]


_BAR = re.compile(r"^(fit one-pass|data variance):.*\|")
#: Progress as plain log lines (stderr is not a terminal here): streamae._progress.
_LOG = re.compile(r"^streamae: (compiling kernels|data variance|fit one-pass|warm-up)[^:]*: ")


def check_messages(lines, sig, out, bars=False):
    """streamae's lines and nothing else; returns the checkpoint's iteration or None."""
    name = signal.Signals(sig).name
    if bars:  # the bars, and the cluster's line if its start-up was complete
        lines = [line for line in lines if not _BAR.match(line) and not _LOG.match(line)
                 and not line.startswith("streamae: Dask cluster tcp://127.0.0.1:")]
    received = f"streamae: {name} received: stopping after the current evaluation" + (
        " (Ctrl-C again to stop at once)" if sig == signal.SIGINT else "")
    assert lines[0] == received, lines
    ckpt = C.default_path(out)
    if len(lines) == 2:
        assert lines[1] == (f"streamae: interrupted by {name} before the first iteration "
                            "finished; nothing to resume: run the same command again"), lines
        assert not os.path.exists(ckpt)
        return None
    iteration = C.read(ckpt).state.iteration
    assert lines[1] == (f"streamae: interrupted by {name}: checkpoint of iteration "
                        f"{iteration} written to '{ckpt}'"), lines
    assert lines[2].startswith("resume with: streamae train ") and len(lines) == 3, lines
    assert lines[2].endswith(" --resume")
    return iteration


def reference(data, iterations):
    """The uninterrupted run (threads: results do not depend on the scheduler)."""
    return SparseAutoencoder(n_hidden=HIDDEN, max_iter=iterations).fit(data)


def resume_and_compare(data, out, lines, iteration, command=True):
    """Continue the interrupted run to a few iterations past its checkpoint (or
    start it again if it had none), then compare with the uninterrupted run."""
    target = (iteration or 0) + 2
    if command:
        # The printed command (or, with no checkpoint, the same command with
        # --resume), with --max-iter lowered: max_iter never changes the path.
        argv = shlex.split(lines[-1].removeprefix("resume with: ")) if iteration is not None \
            else ["streamae", "train", data, "--out", os.fspath(out), *OPTIONS, "--resume"]
        argv[argv.index("--max-iter") + 1] = str(target)
        done = subprocess.run([sys.executable, "-m", "streamae.cli", *argv[1:], "--quiet"],
                              capture_output=True, text=True, timeout=300,
                              start_new_session=True)
        assert done.returncode == 0, done.stderr
        model = SparseAutoencoder.load(out)
    else:
        model = SparseAutoencoder(n_hidden=HIDDEN, max_iter=target).fit(
            data, checkpoint=C.default_path(out), resume=True)
    assert model.n_iter_ == target
    expected = reference(data, target)
    for k in PARAM_NAMES:
        assert getattr(model, k + "_").tobytes() == getattr(expected, k + "_").tobytes(), k


def _case(data, tmp_path, sig, instant, bars=False, command=True):
    out = tmp_path / "model.zarr"
    code, seconds, lines = interrupt(data, out, sig, instant, *([] if bars else ["--quiet"]))
    when = f"{instant[1]:.2f} s into {instant[0]}"
    assert code == 128 + sig, lines
    assert seconds < EXIT_BOUND, f"{seconds:.1f} s to exit after the signal {when}"
    iteration = check_messages(lines, sig, out, bars)
    assert not os.path.exists(out) or os.listdir(out) == ["checkpoint.npz"]  # no model yet
    print(f"{signal.Signals(sig).name} {when}: exit after {seconds:.2f} s, checkpoint of "
          f"iteration {iteration}")  # shown with -s
    resume_and_compare(data, out, lines, iteration, command)
    return seconds


def _instants(n, seed):
    """``n`` seeded instants, every other one anchored at iteration 0."""
    rng = random.Random(seed)
    return [("start-up", rng.uniform(0.0, WINDOW)) if i % 2 == 0
            else ("iterations", rng.uniform(0.0, ITERATIONS)) for i in range(n)]


# A few instants in the default suite: early in the start-up, a random one,
# and one during the iterations with the progress bars on.
@pytest.mark.parametrize("sig, instant, bars", [
    (signal.SIGINT, ("start-up", 0.3), False),
    (signal.SIGTERM, _instants(1, SEED)[0], False),
    (signal.SIGINT, _instants(2, SEED)[1], True),
], ids=["SIGINT-start-up", "SIGTERM-random", "SIGINT-iterations-with-bars"])
def test_group_signal_stops_a_local_cluster_fit(data, tmp_path, sig, instant, bars):
    _case(data, tmp_path, sig, instant, bars, command=(sig == signal.SIGINT and bars))


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("k", range(10))
def test_group_signal_at_ten_random_instants(data, tmp_path, sig, k):
    _case(data, tmp_path, sig, _instants(10, SEED + sig)[k], command=True)


def test_ctrl_c_with_an_external_cluster_is_unchanged(data, tmp_path):
    """A scheduler address: the workers are not in the CLI's process group.
    Ctrl-C to the group finishes the evaluation, writes the checkpoint and
    exits 130; a worker killed meanwhile changes nothing (same bits)."""
    from cluster_fixtures import SubprocessCluster

    out = tmp_path / "model.zarr"
    with SubprocessCluster(tmp_path / "cluster", n_workers=2) as cluster:
        argv = [sys.executable, "-m", "streamae.cli", "train", data, "--out", os.fspath(out),
                "--hidden", str(HIDDEN), "--max-iter", str(MAX_ITER), "--quiet",
                "--scheduler", cluster.address, "--checkpoint-every", "1"]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        try:
            ckpt = C.default_path(out)
            wait_for(lambda: proc.poll() is not None or os.path.exists(ckpt), 120,
                     "the first checkpoint")
            assert proc.poll() is None, proc.communicate()
            worker = psutil.Process(cluster.workers[0].pid).children(recursive=True)
            for p in worker:  # the nanny's worker process: the nanny starts another
                p.kill()
            time.sleep(0.5)
            sent = time.monotonic()
            os.killpg(proc.pid, signal.SIGINT)
            _, stderr = proc.communicate(timeout=60)
            seconds = time.monotonic() - sent
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        assert all(w.poll() is None for w in cluster.workers)  # untouched by the signal
    assert proc.returncode == 130, stderr
    assert seconds < EXIT_BOUND
    iteration = check_messages(_terminal_lines(stderr), signal.SIGINT, out)
    assert iteration is not None
    resume_and_compare(data, out, _terminal_lines(stderr), iteration, command=False)
