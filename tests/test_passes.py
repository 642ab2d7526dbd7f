"""One way through the data (`streamae._passes`): every pass (an evaluation,
the data variance, whitening, encoding, import, patches, a transform in
memory) on every kind of input against plain
NumPy, the same bits on every scheduler, tasks that do not grow with the
chunk count, each output chunk written by one task, and the old keywords of
the public functions (a FutureWarning, the same result).

Tolerances (float64): 1e-12 relative for sums against NumPy's (different
order of additions; measured about 1e-15), 1e-10 absolute for the whitened
values (as tests/test_whiten.py).
"""

import numpy as np
import pytest
import zarr
from helpers import model_at, sigmoid
from numpy.testing import assert_allclose, assert_array_equal

from streamae import _data, encode, import_array, whiten, write_patches
from streamae._cluster import Runner
from streamae._data import open_dataset
from streamae._engine import Evaluator
from streamae._metrics import total_variance
from streamae._objective import make_hyper, reference_cost_and_grad
from streamae._passes import OutputChunks, Pass
from streamae._tree import merge_moments

M, N, S, CHUNK = 1000, 6, 4, 64  # 16 chunks, the last of 40 rows
HYPER = dict(rho=0.1, beta=3.0, weight_decay=1e-3)


@pytest.fixture
def X(rng):
    return rng.uniform(0.05, 0.95, size=(M, N))


@pytest.fixture
def params(make_problem):
    return make_problem(10, N, S)[1]


def numpy_zca(X, epsilon):
    Xc = X - X.mean(axis=0)
    S_, U = np.linalg.eigh(Xc.T @ Xc / X.shape[0])
    return Xc @ (U @ np.diag(1 / np.sqrt(S_ + epsilon)) @ U.T).T


def test_every_pass_on_every_kind_of_store(store_kind, X, params, tmp_path):
    kind, put, options = store_kind
    data = put(X, CHUNK)
    model = model_at(params, **HYPER).set_params(run_options=options)
    cost, grad = model.cost_and_grad(data)
    ref_cost, ref_grad = reference_cost_and_grad(X, params, make_hyper(**HYPER))
    assert cost == pytest.approx(ref_cost, rel=1e-12)
    for k in ref_grad:
        assert_allclose(grad[k], ref_grad[k], rtol=1e-10, atol=1e-14)
    dataset = open_dataset(data, storage_options=options.get("storage_options"))
    ev = Evaluator(dataset, make_hyper(**HYPER), dtype="float64")
    assert total_variance(ev) == pytest.approx(((X - X.mean(axis=0)) ** 2).sum(), rel=1e-12)
    white = whiten(data, tmp_path / "w.zarr", epsilon=0.1, run_options=options)
    assert_allclose(white[...], numpy_zca(X, 0.1), rtol=0, atol=1e-10)
    codes = encode(model, data, tmp_path / "h.zarr", run_options=options)
    assert_allclose(codes[...], sigmoid(X @ params["W1"].T + params["b1"]), rtol=1e-13)
    assert white.compressors == () and codes.compressors == ()  # read straight next time


@pytest.mark.parametrize("scheduler", ["threads", "processes"])
def test_written_passes_have_the_same_bits_on_every_scheduler(X, params, write_zarr, tmp_path,
                                                              scheduler):
    data = write_zarr(X, CHUNK)
    model = model_at(params, **HYPER)
    outputs = {}
    for where in ("synchronous", scheduler):
        options = {"scheduler": where, "read_ahead": 0 if where == "synchronous" else 2}
        outputs[where] = (whiten(data, tmp_path / f"w-{where}.zarr", run_options=options)[...],
                          encode(model, data, tmp_path / f"h-{where}.zarr",
                                 run_options=options)[...])
    for a, b in zip(outputs["synchronous"], outputs[scheduler]):
        assert_array_equal(a, b, strict=True)


def _task_rows(data_pass, align):
    """[start, stop) rows of each task of ``data_pass``'s plan for ``align``."""
    out = []
    reader = data_pass.dataset.reader
    for _, (first, stop) in data_pass.plan(align):
        out.append((int(reader.starts[first]), int(reader.starts[stop])))
    return out


@pytest.mark.parametrize("chunks", [8, 64, 400])
def test_written_pass_tasks_are_few_and_own_whole_output_chunks(rng, write_zarr, chunks):
    """Tasks per pass: at most 2 MIN_TASKS whatever the chunk count; each task's
    rows are whole output chunks, and no two tasks share one."""
    rows = 8000
    data = write_zarr(rng.uniform(size=(rows, 3)), rows // chunks)
    data_pass = Pass(open_dataset(data), Runner("synchronous"))
    for align in (1, 2, 5):  # input batches per output chunk
        spans = _task_rows(data_pass, align)
        assert len(spans) <= 2 * _data.MIN_TASKS
        out_rows = align * data_pass.batch_rows
        assert spans[0][0] == 0 and spans[-1][1] == rows
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
        assert all(start % out_rows == 0 for start, _ in spans)


def test_irregular_batches_are_refused_by_a_written_pass(rng, tmp_path):
    import dask.array as da

    X = da.from_array(rng.uniform(size=(100, 3)), chunks=((30, 20, 50), (3,)))
    data_pass = Pass(open_dataset(X), Runner("synchronous"))
    with pytest.raises(Exception, match="not whole batches"):
        data_pass.write(OutputChunks(str(tmp_path / "o.zarr"), 40, "float64"), _copy_rows)


def _copy_rows(block, row0):
    return np.asarray(block)


def test_variance_pass_reads_large_batches_with_the_same_result(monkeypatch, X, write_zarr):
    """The data variance reads a store's small batches in batches of about
    TASK_BYTES (here two of the evaluations' batches of 64 rows each): the
    same value, to 1e-12."""
    monkeypatch.setattr(_data, "TASK_BYTES", 2 * CHUNK * N * 8)  # 2 batches per batch
    ev = Evaluator(open_dataset(write_zarr(X, CHUNK), chunk_rows=CHUNK),
                   make_hyper(**HYPER), dtype="float64")
    coarse = ev.data_pass.coarse()
    assert ev.data_pass.batches == 16 and coarse.batches == 8
    assert total_variance(ev) == pytest.approx(((X - X.mean(axis=0)) ** 2).sum(), rel=1e-12)


def test_merge_moments_of_vectors_and_matrices(rng):
    parts = [rng.normal(size=(k, 3)) + 5 for k in (4, 9, 1)]
    for matrix in (True, False):
        triples = []
        for p in parts:
            C = (p - p.mean(0)).T @ (p - p.mean(0))
            triples.append((len(p), p.mean(0), C if matrix else np.diag(C).copy()))
        m, mean, C = merge_moments(*triples, (0, np.zeros(3), triples[0][2] * 0))
        X = np.concatenate(parts)
        full = (X - X.mean(0)).T @ (X - X.mean(0))
        assert m == 14
        assert_allclose(mean, X.mean(0), rtol=1e-14)
        assert_allclose(C, full if matrix else np.diag(full), rtol=1e-12)


def test_write_passes_retry_nothing_on_local_schedulers(X, write_zarr, tmp_path):
    """A written pass returns the rows it wrote: every row once."""
    data_pass = Pass(open_dataset(write_zarr(X, CHUNK)), Runner("threads"))
    target = str(tmp_path / "copy.zarr")
    zarr.create_array(target, shape=X.shape, chunks=(2 * CHUNK, N), dtype=X.dtype)
    assert data_pass.write(OutputChunks(target, 2 * CHUNK, X.dtype), _copy_rows) == M
    assert_array_equal(zarr.open_array(target)[...], X)


# ---------------------------------------------------------------- old keywords

def test_old_keywords_warn_and_still_work(X, write_zarr, tmp_path):
    data = write_zarr(X, CHUNK)
    with pytest.warns(FutureWarning, match=r"whiten\(chunk_rows=..., scheduler=...\) is "
                                           r"deprecated .* run_options="):
        old = whiten(data, tmp_path / "old.zarr", chunk_rows=2 * CHUNK, scheduler="threads")
    new = whiten(data, tmp_path / "new.zarr", run_options={"chunk_rows": 2 * CHUNK})
    assert old.chunks == new.chunks == (2 * CHUNK, N)
    assert_array_equal(old[...], new[...])
    np.save(tmp_path / "x.npy", X)
    with pytest.warns(FutureWarning, match=r"import_array\(chunk_rows=...\)"):
        meta = import_array(tmp_path / "x.npy", tmp_path / "imported.zarr", chunk_rows=100)
    assert meta["chunk_rows"] == 100
    with pytest.warns(FutureWarning, match=r"write_patches\(chunk_rows=..., scheduler=...\)"):
        meta = write_patches(tmp_path / "p.zarr", builtin=True, count=300, chunk_rows=128,
                             scheduler="synchronous")
    assert meta["chunk_rows"] == 128
    assert zarr.open_array(str(tmp_path / "p.zarr")).chunks == (128, 64)


def test_chunks_written_directly_are_zarrs_own_bytes(rng, tmp_path):
    """An uncompressed local output's chunk files, written straight from the
    buffer (the last chunk padded to full size), hold the bytes Zarr writes."""
    from streamae._chunkread import LocalChunks
    from streamae._output import open_for_writing

    X = rng.uniform(size=(100, 3)).astype(np.float32)
    paths = {}
    for how in ("zarr", "direct"):
        paths[how] = tmp_path / f"{how}.zarr"
        zarr.create_array(paths[how], shape=X.shape, chunks=(16, 3), dtype=X.dtype,
                          compressors=None)
        z = open_for_writing(str(paths[how]))
        if how == "zarr":
            z[...] = X
        else:
            assert LocalChunks.for_array(z).write_chunks(0, X[:32])
            assert LocalChunks.for_array(z).write_chunks(32, X[32:])
    files = sorted(p.relative_to(paths["zarr"]) for p in paths["zarr"].rglob("c/*/*"))
    assert len(files) == 7
    for f in files:
        assert (paths["direct"] / f).read_bytes() == (paths["zarr"] / f).read_bytes(), f
    assert_array_equal(zarr.open_array(str(paths["direct"]))[...], X)
    compressed = tmp_path / "zstd.zarr"
    zarr.create_array(compressed, shape=X.shape, chunks=(16, 3), dtype=X.dtype)
    assert not LocalChunks.for_array(open_for_writing(str(compressed))).write_chunks(0, X)


@pytest.mark.parametrize("kind", ["store", "numpy"])
def test_one_kernel_call_per_read_gives_the_bits_of_one_per_batch(kind, X, params, write_zarr):
    """The kernels over reads of consecutive batches (several 64-row batches per
    read of a store, the whole run for NumPy input) give the bits of one call
    per batch, for every pass of every strategy, with each decoder."""
    from streamae._objective import Objective

    data = write_zarr(X, CHUNK) if kind == "store" else X
    data_pass = Pass(open_dataset(data, chunk_rows=CHUNK), Runner("threads"))
    p = {k: np.ascontiguousarray(v) for k, v in params.items()}
    c = np.full(S, 0.3)
    for decoder in ("sigmoid", "linear"):
        objective = Objective.of(make_hyper(**HYPER, decoder=decoder))
        for one, batched, consts in ((objective.hidden_sum, objective.hidden_sum_batches, ()),
                                     (objective.backprop, objective.backprop_batches, (c,)),
                                     (objective.one_pass, objective.one_pass_batches, ())):
            per_batch = data_pass.reduce(one, p, *consts, 256)
            per_read = data_pass.reduce_batched(batched, objective.unpacker(batched, S, N), p,
                                                *consts, 256)
            assert type(per_read) is type(per_batch)
            for a, b in zip(per_batch, per_read):
                assert np.asarray(a).tobytes() == np.asarray(b).tobytes(), (decoder, one)


class _KernelTasks:
    """Counts the kernel tasks (``_task_*`` keys) of the local Dask computes inside."""

    def __enter__(self):
        from dask.callbacks import Callback

        self.keys = []
        keys = self.keys

        class Count(Callback):
            def _pretask(self, key, dsk, state):
                if str(key[0] if isinstance(key, tuple) else key).startswith("_task_"):
                    keys.append(key)

        self._callback = Count()
        self._callback.__enter__()
        return self

    def __exit__(self, *exc):
        self._callback.__exit__(*exc)

    def passes(self):
        """{pass name: tasks}."""
        out = {}
        for key in self.keys:
            name = key[0].rsplit("-", 1)[0]
            out[name] = out.get(name, 0) + 1
        return out


@pytest.mark.parametrize("chunks", [10, 400])
def test_import_patches_and_transform_run_few_tasks_whatever_the_chunk_count(
        chunks, rng, tmp_path, write_zarr):
    """Import's scale statistics and copy, the patches' statistics and write,
    and a transform in memory are passes like the others: at most
    2 MIN_TASKS tasks each, however many chunks; the same values."""
    X = rng.uniform(0, 255, size=(4000, N))
    np.save(tmp_path / "x.npy", X)
    rows = 4000 // chunks
    limit = 2 * _data.MIN_TASKS
    with _KernelTasks() as tasks:
        meta = import_array(tmp_path / "x.npy", tmp_path / f"i{chunks}.zarr", scale="minmax",
                            run_options={"chunk_rows": rows})
    assert tasks.passes() and max(tasks.passes().values()) <= limit, tasks.passes()
    assert set(tasks.passes()) == {"_task_range_of", "_task_scaled_rows"}
    lo, hi = X.min(axis=0), X.max(axis=0)
    assert_array_equal(zarr.open_array(tmp_path / f"i{chunks}.zarr")[...],
                       (X - lo) / (hi - lo))  # float64 in, float64 out
    assert meta["value_range"] == [0.0, 1.0]
    with _KernelTasks() as tasks:
        write_patches(tmp_path / f"p{chunks}.zarr", builtin=True, size=4, count=4000,
                      run_options={"chunk_rows": rows})
    assert set(tasks.passes()) == {"_task_column_sums", "_task_as_written"}
    assert max(tasks.passes().values()) <= limit, tasks.passes()
    model = model_at(make_problem_params(rng), **HYPER)
    data = write_zarr(rng.uniform(0.05, 0.95, size=(4000, N)), rows)
    with _KernelTasks() as tasks:
        H = model.transform(data)
    assert list(tasks.passes()) == ["_task_encode_rows"]
    assert max(tasks.passes().values()) <= limit, tasks.passes()
    X2 = zarr.open_array(data)[...]
    assert_allclose(H, sigmoid(X2 @ model.W1_.T + model.b1_), rtol=1e-12)


def make_problem_params(rng):
    return {"W1": rng.normal(0, 0.1, (S, N)), "b1": rng.normal(0, 0.1, S),
            "W2": rng.normal(0, 0.1, (N, S)), "b2": rng.normal(0, 0.1, N)}


def test_patches_have_the_same_bits_on_every_scheduler_and_chunking(tmp_path):
    kw = dict(builtin=True, size=4, count=3000, seed=3)
    runs = []
    for i, options in enumerate([{"chunk_rows": 300, "scheduler": "synchronous"},
                                 {"chunk_rows": 300, "scheduler": "processes"},
                                 {"chunk_rows": 1000}]):
        write_patches(tmp_path / f"{i}.zarr", run_options=options, **kw)
        runs.append(zarr.open_array(tmp_path / f"{i}.zarr")[...])
    assert_array_equal(runs[0], runs[1], strict=True)
    assert_allclose(runs[0], runs[2], rtol=1e-6)  # the std's additions differ
