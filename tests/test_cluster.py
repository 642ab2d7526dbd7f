"""Schedulers and clusters (issue 4): real clusters on 127.0.0.1, started here.

- The cost, the gradient and the trained weights are bit-identical on the
  synchronous, threaded, process-pool and distributed schedulers, with 1, 2 or
  3 workers, a LocalCluster or a scheduler and workers run as subprocesses.
- A worker SIGKILLed in the middle of a fit costs a recomputation; the trained
  model is the undisturbed one, bit for bit (also when it held the only copy
  of the scattered parameters).
- A dead scheduler gives a one-line `ClusterError` quickly, and the fit
  resumes from its checkpoint on a new cluster with the same bits.
- Data moved between the client and the cluster per evaluation does not grow
  with the rows; in-memory data crosses once per fit.

Every cluster is closed and every process started here is stopped.
"""

import copy
import os
import signal
import threading
import time

import numpy as np
import pytest
from cluster_fixtures import (
    ByteMeter,
    SubprocessCluster,
    free_port,
    local_cluster,
    make_store,
    wait_for,
)

from streamae import ClusterError, ParameterError, SparseAutoencoder
from streamae._cluster import Runner, embedded_bytes, is_address
from streamae._data import open_dataset
from streamae._engine import STRATEGIES, Evaluator
from streamae._objective import PARAM_NAMES, init_params, make_hyper

pytest.importorskip("distributed")

M, N, CHUNK = 3000, 16, 250          # 12 chunks
SPLIT = 3                            # 12 -> 4 -> 2 -> 1: a three-level tree
MODEL = dict(n_hidden=6, rho=0.1, beta=3.0, weight_decay=1e-3, dtype="float32",
             random_state=0, strategy="one-pass", max_iter=8)
RUN = dict(split_every=SPLIT)
FIT_ARGS = ("callback", "checkpoint", "checkpoint_every", "resume", "overwrite")


# ----------------------------------------------------------------- helpers

def fit_bits(model):
    """Everything a fit produces that must not change: weights and cost history."""
    bits = {k: getattr(model, k + "_").tobytes() for k in PARAM_NAMES}
    bits["costs"] = np.array([r["cost"] for r in model.history_]).tobytes()
    bits["rho_hat"] = model.rho_hat_.tobytes()
    return bits


def eval_bits(cost, grad):
    return (np.float64(cost).tobytes(), *(grad[k].tobytes() for k in PARAM_NAMES))


def fitted(path, scheduler, **kw):
    """A fit on ``scheduler``; ``kw``: fit arguments, run options or hyperparameters."""
    fit_kw = {k: kw.pop(k) for k in list(kw) if k in FIT_ARGS}
    run = {k: kw.pop(k) for k in list(kw) if k in ("workers", "chunk_rows")}
    model = SparseAutoencoder(**{**MODEL, **kw},
                              run_options={**RUN, "scheduler": scheduler, **run})
    return model.fit(path, **fit_kw)


def on(model, scheduler, **params):
    """A copy of the fitted ``model`` that runs on ``scheduler``."""
    run = {k: params.pop(k) for k in list(params) if k in ("workers", "chunk_rows")}
    return copy.copy(model).set_params(run_options={**RUN, "scheduler": scheduler, **run},
                                       **params)


def evaluate_all(model, data, scheduler, **kw):
    return {s: eval_bits(*on(model, scheduler, strategy=s, **kw).cost_and_grad(data))
            for s in STRATEGIES}


def workers_of(client):
    return client.scheduler_info(n_workers=-1)["workers"]


def scale(client, n):
    client.cluster.scale(n)
    wait_for(lambda: len(workers_of(client)) == n, 60, f"{n} workers")


def one_line(exc):
    text = str(exc.value)
    assert "\n" not in text, text
    return text


# ----------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("cluster") / "x.zarr", M, N, CHUNK)


@pytest.fixture(scope="module")
def point():
    """A model at fixed weights, for single evaluations."""
    params = init_params(N, MODEL["n_hidden"], np.random.default_rng(7))
    kw = {k: MODEL[k] for k in ("rho", "beta", "weight_decay", "dtype")}
    return SparseAutoencoder.from_weights(**params, **kw)


@pytest.fixture(scope="module")
def reference(store, point):
    """Synchronous scheduler: evaluations of every strategy and a fit."""
    return {"eval": evaluate_all(point, store, "synchronous"),
            "fit": fit_bits(fitted(store, "synchronous"))}


@pytest.fixture(scope="module")
def subprocess_cluster(tmp_path_factory):
    """`dask scheduler` + 2 `dask worker` processes (with nannies), reached by address."""
    with SubprocessCluster(tmp_path_factory.mktemp("subprocess"), n_workers=2) as sc:
        yield sc


@pytest.fixture(scope="module")
def cluster():
    """A LocalCluster of 3 single-threaded worker processes (nannies) and its client."""
    with local_cluster(3) as client:
        yield client


# ----------------------------------------------------------------- choosing a scheduler

@pytest.mark.parametrize("given, kind", [
    (None, "threads"), ("threads", "threads"), ("threading", "threads"),
    ("synchronous", "synchronous"), ("sync", "synchronous"), ("processes", "processes"),
    ("tcp://127.0.0.1:8786", "distributed"), ("127.0.0.1:8786", "distributed"),
])
def test_scheduler_names(given, kind):
    assert Runner(given).kind == kind


def test_addresses():
    assert is_address("tcp://10.0.0.5:8786") and is_address("tls://sched:8786")
    assert is_address("localhost:8786")
    assert not is_address("threads") and not is_address("data.zarr")


@pytest.mark.parametrize("scheduler, workers, words", [
    ("gpu", None, "unknown scheduler 'gpu'"),
    ("threads", 0, "workers must be an integer >= 1"),
    ("synchronous", 2, "does not apply to the synchronous"),
    ("tcp://127.0.0.1:8786", 2, "cannot be combined"),
])
def test_bad_scheduler_choices(scheduler, workers, words):
    with pytest.raises(ParameterError, match=words):
        Runner(scheduler, workers)


def test_no_scheduler_at_address_is_one_line(store):
    import dask

    address = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}), \
            pytest.raises(ClusterError, match="cannot connect to the Dask scheduler") as exc:
        fitted(store, address)
    assert address in one_line(exc)


# ----------------------------------------------------------------- bit-identical everywhere

@pytest.mark.parametrize("workers", [1, 2, 3])
def test_threads_bit_identical(store, point, reference, workers):
    assert evaluate_all(point, store, "threads", workers=workers) == reference["eval"]
    assert fit_bits(fitted(store, "threads", workers=workers)) == reference["fit"]


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_processes_bit_identical(store, point, reference, workers):
    runner = Runner("processes", workers=workers)
    with runner.session():  # one pool for all the calls
        assert evaluate_all(point, store, runner) == reference["eval"]
        assert fit_bits(fitted(store, runner)) == reference["fit"]
    assert runner._pool is None  # the pool was shut down with the session


def test_local_cluster_bit_identical_with_1_2_3_workers(cluster, store, point, reference):
    for n in (3, 2, 1):
        scale(cluster, n)
        assert evaluate_all(point, store, cluster) == reference["eval"], n
        assert fit_bits(fitted(store, cluster)) == reference["fit"], n
    # Parameters scattered and broadcast instead of sent in the graph: same bits.
    runner = Runner(cluster, scatter_threshold=0)
    assert evaluate_all(point, store, runner) == reference["eval"]
    assert fit_bits(fitted(store, runner)) == reference["fit"]


def test_chunks_are_read_by_the_kernel_tasks(cluster, store, point):
    """One task per chunk reads and reduces it (no separate read tasks whose
    output would travel), plus the reduction tree; nothing else."""
    from dask.utils import key_split
    from distributed import get_task_stream

    with get_task_stream(cluster) as stream:
        on(point, cluster, strategy="one-pass").cost_and_grad(store)
    prefixes = sorted(key_split(t["key"]) for t in stream.data)
    kernels = [p for p in prefixes if p == "task_one_pass"]
    assert len(kernels) == M // CHUNK
    assert all(p in ("task_one_pass", "add_parts", "combine_runs") or p.startswith(
        ("dict", "original-")) for p in prefixes), prefixes


def test_streaming_tasks_bit_identical_on_a_cluster(cluster, store, point, reference,
                                                    monkeypatch):
    """Tasks that stream 9 and then 3 chunks each (with read-ahead) on the
    cluster: the bits of one task per chunk on the synchronous scheduler."""
    from streamae import _passes

    monkeypatch.setattr(_passes, "MIN_TASKS", 1)
    scale(cluster, 2)
    for read_ahead in (0, 2):
        monkeypatch.setattr(_passes, "READ_AHEAD", read_ahead)
        runner = Runner(cluster)
        got = evaluate_all(point, store, runner)
        assert got == reference["eval"], read_ahead
    dataset = open_dataset(store)
    assert Evaluator(dataset, point.hyper, split_every=SPLIT).tasks_per_pass == 2


def _blas_threads():
    from threadpoolctl import threadpool_info

    return {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}


def test_workers_are_set_up(cluster, store, point):
    """Every worker runs BLAS on one thread (and has streamae's malloc settings),
    through a plugin that also covers workers started later."""
    on(point, cluster).cost_and_grad(store)
    plugins = cluster.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.worker_plugins))
    assert "streamae-worker-setup" in plugins
    assert all(threads == {1} for threads in cluster.run(_blas_threads).values())


def test_data_persisted_on_the_workers(cluster, store, reference):
    """A Dask array persisted on the cluster (data that fits in the workers'
    memory): read from the store once, then every evaluation computes in place."""
    import dask.array as da

    X = cluster.persist(da.from_zarr(store))
    assert fit_bits(fitted(X, cluster)) == reference["fit"]


# ----------------------------------------------------------------- losing a worker

@pytest.fixture(scope="module")
def big_store(tmp_path_factory):
    """40 chunks, streamed 3 to a task: evaluations long enough to be caught
    in the middle (tasks of several chunks make fewer, longer tasks, so the
    chunks are larger than the 1,000 rows one task per chunk needed)."""
    return make_store(tmp_path_factory.mktemp("big") / "x.zarr", 400_000, N, 10_000, seed=3)


def _kill_a_busy_worker(client, go, done, report, ready=None):
    """Once ``go`` is set, SIGKILL the first worker seen running a task (``ready``
    is set once the workers' process ids are known)."""
    pids = client.run(os.getpid)
    if ready is not None:
        ready.set()
    go.wait(60)
    while not done.is_set():
        busy = [w for w, keys in client.processing().items() if keys]
        if busy:
            os.kill(pids[busy[0]], signal.SIGKILL)
            report.update(worker=busy[0], pid=pids[busy[0]])
            return
        time.sleep(0.002)


@pytest.mark.parametrize("n_workers, scatter_threshold", [(1, 0), (2, 2**20)],
                         ids=["only-worker-holds-scattered-params", "2-workers"])
def test_worker_killed_mid_fit_changes_nothing(cluster, big_store, n_workers,
                                               scatter_threshold):
    expected = fit_bits(fitted(big_store, "synchronous", max_iter=5))
    scale(cluster, n_workers)
    go, done, report = threading.Event(), threading.Event(), {}
    killer = threading.Thread(target=_kill_a_busy_worker, args=(cluster, go, done, report))
    killer.start()

    def callback(model, record):
        if record["phase"] == "full":  # kill during the full-data evaluations
            go.set()
        return False

    try:
        model = fitted(big_store, Runner(cluster, scatter_threshold=scatter_threshold),
                       max_iter=5, callback=callback)
    finally:
        done.set()
        go.set()
        killer.join(30)
    assert report, "no worker was killed during the fit"
    assert fit_bits(model) == expected
    # The worker process really died (its nanny may take a while to replace it).
    wait_for(lambda: _gone(report["pid"]), 60, f"process {report['pid']} to end")


def _gone(pid):
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _write_job(job, store, out, scheduler, point):
    """Whiten or encode ``store`` into ``out`` on ``scheduler``; the written values."""
    from streamae import encode, whiten

    options = {"scheduler": scheduler, "split_every": SPLIT}
    if job == "whiten":
        return whiten(store, out, run_options=options)[...]
    return encode(point, store, out, run_options=options)[...]


@pytest.mark.parametrize("job", ["whiten", "encode"])
def test_worker_killed_while_writing_changes_nothing(cluster, big_store, point, tmp_path, job):
    """A worker killed during whitening (its moments or its write) or encoding:
    the tasks it ran are run again elsewhere, each output chunk written again
    by one task, and the output has the bits of an undisturbed run."""
    expected = _write_job(job, big_store, tmp_path / "expected.zarr", "synchronous", point)
    scale(cluster, 2)
    go, done, ready, report = threading.Event(), threading.Event(), threading.Event(), {}
    killer = threading.Thread(target=_kill_a_busy_worker,
                              args=(cluster, go, done, report, ready))
    killer.start()
    ready.wait(60)
    go.set()
    try:
        got = _write_job(job, big_store, tmp_path / "got.zarr", cluster, point)
    finally:
        done.set()
        killer.join(30)
    assert report, f"no worker was killed during {job}"
    assert got.tobytes() == expected.tobytes()
    wait_for(lambda: len(workers_of(cluster)) == 2, 180, "the restarted worker")


# ----------------------------------------------------------------- subprocess cluster

def test_subprocess_cluster(subprocess_cluster, store, point, reference):
    address = subprocess_cluster.address
    assert fit_bits(fitted(store, address)) == reference["fit"]
    runner = Runner(address)
    with runner.session():
        assert evaluate_all(point, store, runner) == reference["eval"]
        # In-memory input: the same bits.
        X = np.asarray(open_dataset(store).array)
        assert evaluate_all(point, X, runner, chunk_rows=CHUNK) == reference["eval"]


def _bytes_per_evaluation(runner, data, params, repeats=4, chunk_rows=None):
    """(bytes of the first evaluation, mean bytes of the next ``repeats``)."""
    dataset = open_dataset(data, chunk_rows=chunk_rows)
    evaluator = Evaluator(dataset, make_hyper(0.1, 3.0, 1e-3), dtype="float32",
                          strategy="one-pass", scheduler=runner, split_every=SPLIT)
    with ByteMeter() as first:
        evaluator(params)
    with ByteMeter() as later:
        for _ in range(repeats):
            evaluator(params)
    return first.total, later.total / repeats


def test_bytes_per_evaluation_do_not_grow_with_rows(subprocess_cluster, tmp_path):
    """Client <-> scheduler traffic is O(parameters + chunks), not O(rows)."""
    params = init_params(N, MODEL["n_hidden"], np.random.default_rng(0))
    chunks = 12
    small = make_store(tmp_path / "small.zarr", 12 * 250, N, 250)
    large = make_store(tmp_path / "large.zarr", 12 * 5000, N, 5000)
    large_bytes = 12 * 5000 * N * 4
    runner = Runner(subprocess_cluster.address)
    with runner.session():
        _, per_small = _bytes_per_evaluation(runner, small, params)
        _, per_large = _bytes_per_evaluation(runner, large, params)
        # In-memory data goes to the cluster once, then stays there.
        X = np.asarray(open_dataset(large).array)
        assert embedded_bytes(open_dataset(X, chunk_rows=5000).array) == X.nbytes
        first, per_memory = _bytes_per_evaluation(runner, X, params, chunk_rows=5000)
    param_bytes = sum(v.size for v in params.values()) * 4
    assert per_large < 1.25 * per_small + 4096, (per_small, per_large)
    assert per_large < large_bytes / 20, (per_large, large_bytes)
    assert per_large > param_bytes  # the parameters and the result do travel
    assert first > X.nbytes > 20 * per_memory, (first, per_memory, X.nbytes)
    print(f"client<->scheduler bytes per one-pass evaluation, {chunks} chunks, "
          f"{param_bytes} parameter bytes: {per_small:.0f} (3,000 rows), "
          f"{per_large:.0f} (60,000 rows); in-memory 60,000 rows: first {first}, "
          f"then {per_memory:.0f}")


# ----------------------------------------------------------------- losing the scheduler

@pytest.mark.parametrize("every", [1, 0], ids=["every-iteration", "only-at-the-error"])
def test_scheduler_killed_error_then_resume(tmp_path, store, reference, subprocess_cluster,
                                            every):
    checkpoint = tmp_path / "run.ckpt"
    with SubprocessCluster(tmp_path / "c1", n_workers=1) as sc:
        def callback(model, record):
            if record["iteration"] == 3:
                sc.kill_scheduler()
            return False

        with pytest.raises(ClusterError, match="lost the Dask scheduler") as exc:
            fitted(store, sc.address, callback=callback, checkpoint=checkpoint,
                   checkpoint_every=every)
        assert sc.address in one_line(exc) and "resuming from the last checkpoint" in str(
            exc.value)
        # Written when the error happened, also without periodic checkpoints.
        assert "the checkpoint of iteration 3 was written to" in str(exc.value)
        assert exc.value.checkpoint == str(checkpoint) and exc.value.iteration == 3
    assert checkpoint.exists()
    # Another cluster picks the run up from its checkpoint.
    model = fitted(store, subprocess_cluster.address, checkpoint=checkpoint,
                   checkpoint_every=1, resume=True)
    assert model.resumed_from_ == 3
    assert fit_bits(model) == reference["fit"]


def test_results_recomputed_after_a_lost_worker_are_not_logged(caplog):
    """distributed's "Couldn't gather ... rescheduling" (a result lost with its
    worker, recomputed by the cluster) does not reach the user; other
    warnings of its client do."""
    import logging

    from streamae._failures import quiet_rescheduling as _quiet_rescheduling

    _quiet_rescheduling()
    logger = logging.getLogger("distributed.client")
    with caplog.at_level(logging.WARNING, logger="distributed.client"):
        logger.warning("Couldn't gather %s keys, rescheduling %s", 1, ("_combine_runs-0",))
        logger.warning("something else")
    assert [r.getMessage() for r in caplog.records] == ["something else"]
