"""Whole-dataset evaluations: every strategy, input kind and chunking against
the plain NumPy reference; float32 against float64; determinism across
schedulers; bad data named by chunk and rows.

Tolerances (float64): cost and every gradient array within 1e-12 of the
reference, relative to the array's largest entry. Measured over all the
cases below (3 seeds): at most 9.3e-16 for every strategy (only the
summation order differs).
"""

import copy

import dask
import dask.array as da
import numpy as np
import pytest
import zarr
from numpy.testing import assert_allclose, assert_array_equal

from streamae import (
    STRATEGIES,
    DataError,
    NumericalError,
    SparseAutoencoder,
    _passes,
    reference_cost_and_grad,
)
from streamae._data import open_dataset
from streamae._engine import Evaluator
from streamae._objective import PARAM_NAMES, make_hyper
from streamae._passes import stream_group, subtree_size
from streamae._tree import EagerTree, _merge_bad, tree

RTOL64 = 1e-12


def assert_same_objective(cost, grad, ref_cost, ref_grad, rtol):
    """Cost within rtol; each gradient array within rtol of its largest entry."""
    assert cost == pytest.approx(ref_cost, rel=rtol, abs=0)
    for k in PARAM_NAMES:
        assert grad[k].shape == ref_grad[k].shape
        assert_allclose(grad[k], ref_grad[k], rtol=rtol, atol=rtol * np.abs(ref_grad[k]).max(),
                        err_msg=k)


def model_for(params, hyper_kw, dtype="float64"):
    return SparseAutoencoder.from_weights(**params, **hyper_kw, dtype=dtype)


def evaluate(model, data, strategy="one-pass", **run):
    """Cost and gradient of ``model`` (a copy: the fixture is shared) with
    ``strategy`` and run options ``run``."""
    return copy.copy(model).set_params(strategy=strategy, run_options=run).cost_and_grad(data)


# ----------------------------------------------------------------- inputs and chunkings

M = 50
CHUNKINGS = {  # rows per chunk -> the chunk sizes it must produce for 50 rows
    "one-chunk": (50, (50,)),
    "many-chunks": (5, (5,) * 10),
    "uneven-last": (13, (13, 13, 13, 11)),
    "one-row": (1, (1,) * 50),
}
INPUT_KINDS = ["zarr-path", "zarr-array", "dask-array", "numpy"]


def make_input(kind, X, chunk_rows, write_zarr):
    """The data in one of the accepted forms, chunked by ``chunk_rows`` rows
    through that form's own mechanism; returns (data, extra cost_and_grad kwargs)."""
    if kind == "zarr-path":
        return write_zarr(X, chunk_rows), {}
    if kind == "zarr-array":
        return zarr.open_array(write_zarr(X, chunk_rows), mode="r"), {}
    if kind == "dask-array":
        return da.from_array(X, chunks=(chunk_rows, X.shape[1])), {}
    return X, {"chunk_rows": chunk_rows}


@pytest.mark.parametrize("chunking", list(CHUNKINGS))
@pytest.mark.parametrize("kind", INPUT_KINDS)
def test_strategies_match_reference(kind, chunking, make_problem, hyper, hyper_kw,
                                    write_zarr):
    X, params = make_problem(M, 8, 5)
    chunk_rows, expected_chunks = CHUNKINGS[chunking]
    data, kw = make_input(kind, X, chunk_rows, write_zarr)
    # The case really has the chunking it claims.
    assert open_dataset(data, **kw).array.chunks == (expected_chunks, (8,))

    ref_cost, ref_grad = reference_cost_and_grad(X, params, hyper)
    model = model_for(params, hyper_kw)
    results = {s: evaluate(model, data, strategy=s, **kw) for s in STRATEGIES}
    for strategy, (cost, grad) in results.items():
        assert all(g.dtype == np.float64 for g in grad.values()), strategy
        assert_same_objective(cost, grad, ref_cost, ref_grad, RTOL64)
    # ... and with each other.
    first = results[STRATEGIES[0]]
    for strategy in STRATEGIES[1:]:
        assert_same_objective(*results[strategy], *first, RTOL64)


def test_chunk_rows_overrides_store_chunks(make_problem, hyper, hyper_kw, write_zarr):
    X, params = make_problem(M, 8, 5)
    path = write_zarr(X, 10)
    assert open_dataset(path, chunk_rows=7).array.chunks[0] == (7,) * 7 + (1,)
    ref = reference_cost_and_grad(X, params, hyper)
    for strategy in STRATEGIES:
        got = evaluate(model_for(params, hyper_kw), path, strategy=strategy, chunk_rows=7)
        assert_same_objective(*got, *ref, RTOL64)


@pytest.mark.parametrize("split_every", [2, 3, 8])
def test_reduction_fan_in_does_not_change_the_result(split_every, make_problem, hyper,
                                                     hyper_kw):
    X, params = make_problem(M, 8, 5)
    ref = reference_cost_and_grad(X, params, hyper)
    for strategy in STRATEGIES:
        got = evaluate(
            model_for(params, hyper_kw), X, strategy=strategy, chunk_rows=1,
            split_every=split_every)
        assert_same_objective(*got, *ref, RTOL64)


def test_float32_store_with_float64_model(make_problem, hyper, hyper_kw, write_zarr):
    """The data's dtype is not the arithmetic's: float32 data is upcast exactly."""
    X, params = make_problem(M, 8, 5)
    X32 = X.astype(np.float32)
    path = write_zarr(X32, 13)
    ref = reference_cost_and_grad(X32.astype(np.float64), params, hyper)
    for strategy in STRATEGIES:
        got = evaluate(model_for(params, hyper_kw), path, strategy=strategy)
        assert_same_objective(*got, *ref, RTOL64)


@pytest.mark.parametrize("dtype", [np.uint8, np.bool_])
def test_integer_and_boolean_data(dtype, rng, make_problem, hyper, hyper_kw):
    _, params = make_problem(M, 8, 5)
    X = (rng.uniform(size=(M, 8)) > 0.5).astype(dtype)
    ref = reference_cost_and_grad(X.astype(np.float64), params, hyper)
    for strategy in STRATEGIES:
        got = evaluate(model_for(params, hyper_kw), X, strategy=strategy, chunk_rows=13)
        assert_same_objective(*got, *ref, RTOL64)


# ----------------------------------------------------------------- float32 arithmetic

# float32 kernels against float64 ones, 3000 x 64 -> 25 in chunks of 700 rows
# (the last one 200). Measured over 4 seeds and 3 problem sizes up to 20000
# rows: cost relative error <= 5e-9 (the cost is summed in float64 from
# per-element errors that average out); gradient error <= 3e-7 of the
# array's largest entry (about 2.5 float32 epsilons). Tolerances: cost rtol
# 1e-6, gradient 2e-6 x max |g| of each array.
F32_COST_RTOL = 1e-6
F32_GRAD_RTOL = 2e-6


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_float32_agrees_with_float64(strategy, make_problem, hyper_kw):
    X, params = make_problem(3000, 64, 25)
    c64, g64 = evaluate(
        model_for(params, hyper_kw, "float64"), X, strategy=strategy, chunk_rows=700)
    c32, g32 = evaluate(
        model_for(params, hyper_kw, "float32"), X, strategy=strategy, chunk_rows=700)
    assert c32 == pytest.approx(c64, rel=F32_COST_RTOL, abs=0)
    for k in PARAM_NAMES:
        assert g32[k].dtype == np.float64  # sums and the result are float64 anyway
        assert_allclose(g32[k], g64[k], rtol=0, atol=F32_GRAD_RTOL * np.abs(g64[k]).max(),
                        err_msg=k)
    # float32 really is different arithmetic (else this test would prove nothing).
    assert any(not np.array_equal(g32[k], g64[k]) for k in PARAM_NAMES)


# ----------------------------------------------------------------- determinism

@pytest.mark.parametrize("strategy", STRATEGIES)
def test_bit_identical_across_runs_and_schedulers(strategy, make_problem, hyper_kw):
    X, params = make_problem(400, 16, 6)
    model = model_for(params, hyper_kw, "float32")
    runs = [evaluate(model, X, strategy=strategy, chunk_rows=37, scheduler=sched)
            for sched in ("threads", "threads", "synchronous")]
    for cost, grad in runs[1:]:
        assert cost == runs[0][0]
        for k in PARAM_NAMES:
            assert_array_equal(grad[k], runs[0][1][k], strict=True)


@pytest.mark.parametrize("strategy", ["one-pass", "two-pass"])
@pytest.mark.parametrize("kind", ["zarr-path", "dask-array", "numpy"])
def test_the_first_evaluation_measures_the_variance_from_its_own_reads(
        strategy, kind, make_problem, hyper, write_zarr):
    """No pass of its own: the evaluation's results keep their bits, the
    variance matches NumPy's and has the same bits on every scheduler."""
    X, params = make_problem(M, 8, 5)
    data, kw = make_input(kind, X, 13, write_zarr)
    variances = []
    # Process pools cost seconds to start: one input kind is enough for them.
    schedulers = ("threads", "synchronous") + (("processes",) if kind == "zarr-path" else ())
    for scheduler in schedulers:
        ev = Evaluator(open_dataset(data, **kw), hyper, dtype="float64", strategy=strategy,
                       scheduler=scheduler)
        plain = ev(params)
        ev.measure_variance()
        measured = ev(params)
        assert ev.variance is not None and ev.evaluations == 2
        assert measured.cost == plain.cost
        for k in PARAM_NAMES:
            assert_array_equal(measured.grad[k], plain.grad[k], strict=True)
        ev(params)  # asked once: later evaluations take no moments
        variances.append(ev.variance)
    assert variances[0] == pytest.approx(((X - X.mean(axis=0)) ** 2).sum(), rel=1e-12)
    assert variances.count(variances[0]) == len(schedulers), variances


def test_a_fit_without_warm_up_reads_the_data_only_for_its_evaluations(make_problem,
                                                                       write_zarr):
    X, _ = make_problem(400, 8, 5)
    model = SparseAutoencoder(n_hidden=5, max_iter=3, warmup="none", tol=0).fit(
        write_zarr(X, 50))
    first = model.history_[0]
    assert first["data_passes"] == 1.0  # the first evaluation, which measured the variance
    total = ((X - X.mean(axis=0)) ** 2).sum()
    expected = 1.0 - 2.0 * len(X) * first["reconstruction"] / total
    assert first["explained_variance"] == pytest.approx(expected, rel=1e-9)


# ----------------------------------------------------------------- reduction pieces

def test_merge_bad_records():
    records = [np.array([0, -1]), np.array([2, 30]), np.array([0, -1]), np.array([1, 12])]
    assert_array_equal(_merge_bad(records), [3, 12])
    assert_array_equal(_merge_bad([np.array([0, -1])] * 3), [0, -1])


def test_tree_sum_groups_by_index():
    parts = [dask.delayed((np.array([float(i)]), float(i), np.array([i % 2, 100 - i])))
             for i in range(11)]
    for split_every in (2, 3, 8, 16):
        total, scalar, bad = dask.compute(tree(parts, split_every),
                                          scheduler="synchronous")[0]
        assert total[0] == 55.0 and scalar == 55.0
        # Counts add up (five odd i); the first row is the smallest among records
        # with a count, 100 - 9, not the first record's.
        assert_array_equal(bad, [5, 91])
    with pytest.raises(ValueError, match="split_every"):
        tree(parts, 1)


# ----------------------------------------------------------------- bad data

BAD_VALUES = {
    "nan": (np.nan, "NaN"),
    "inf": (np.inf, "inf"),
    "minus-inf": (-np.inf, "inf"),
    "above-1": (1.5, "outside [0, 1]"),
    "below-0": (-0.25, "outside [0, 1]"),
}


def _check_bad_message(msg, source, chunk, start, stop, rows, what):
    assert "\n" not in msg
    assert source in msg
    assert f"chunk {chunk} (rows {start}-{stop})" in msg
    assert f"in rows {', '.join(map(str, rows))}" in msg
    assert what in msg
    assert "clean the data" in msg or "rescale" in msg  # the fix


@pytest.mark.parametrize("value", list(BAD_VALUES))
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_bad_values_named_by_chunk_and_rows(strategy, value, make_problem, hyper_kw,
                                            write_zarr):
    X, params = make_problem(M, 8, 5)
    bad, what = BAD_VALUES[value]
    X[23, 3] = bad
    X[25, 0] = bad
    X[41, 7] = bad  # a later chunk: the message names the first one
    path = write_zarr(X, 10)
    model = model_for(params, hyper_kw)
    with pytest.raises(DataError) as info:
        evaluate(model, path, strategy=strategy)
    _check_bad_message(str(info.value), path, 2, 20, 29, [23, 25], what)


@pytest.mark.parametrize("kind", ["zarr-array", "dask-array", "numpy"])
def test_nan_named_for_every_input_kind(kind, make_problem, hyper_kw, write_zarr):
    X, params = make_problem(M, 8, 5)
    X[37, 1] = np.nan
    data, kw = make_input(kind, X, 13, write_zarr)
    source = {"zarr-array": "Zarr array", "dask-array": "Dask array",
              "numpy": "NumPy array"}[kind]
    for strategy in STRATEGIES:
        with pytest.raises(DataError) as info:
            evaluate(model_for(params, hyper_kw), data, strategy=strategy, **kw)
        _check_bad_message(str(info.value), source, 2, 26, 38, [37], "NaN")


def test_bad_values_stop_fit(make_problem, hyper_kw, write_zarr):
    X, _ = make_problem(M, 8, 5)
    X[3, 3] = np.nan
    path = write_zarr(X, 10)
    model = SparseAutoencoder(n_hidden=5, **hyper_kw)
    for strategy in STRATEGIES:
        with pytest.raises(DataError, match=r"chunk 0 \(rows 0-9\): 1 NaN value\(s\) in rows 3"):
            model.set_params(strategy=strategy, max_iter=3).fit(path)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_saturated_hidden_unit_is_an_error_not_nan(strategy, dtype, make_problem, hyper_kw):
    """sigmoid(60) is exactly 1 in float32 and float64: rho_hat of unit 2 is 1 and
    the KL term infinite; the evaluation must say so instead of returning NaN."""
    X, params = make_problem(M, 8, 5)
    params["b1"][2] = 60.0
    with pytest.raises(NumericalError) as info:
        evaluate(model_for(params, hyper_kw, dtype), X, strategy=strategy, chunk_rows=13)
    msg = str(info.value)
    assert "\n" not in msg and "rho_hat" in msg and "[2]" in msg


# ----------------------------------------------------------------- streaming tasks

def _eval_bits(dataset, params, strategy, split_every=3, **kw):
    ev = Evaluator(dataset, make_hyper(0.1, 3.0, 1e-3), dtype="float64", strategy=strategy,
                   split_every=split_every, **kw)
    result = ev(params)
    return ev.tasks_per_pass, (np.float64(result.cost).tobytes(),
                               *(result.grad[k].tobytes() for k in PARAM_NAMES))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_streamed_groups_and_read_ahead_give_the_same_bits(strategy, make_problem,
                                                           write_zarr, monkeypatch):
    """One task per chunk, tasks streaming 3 or 9 chunks (split_every 3), the
    last task partial, any read-ahead, chunks read one by one or together,
    threads or synchronous; the data in a Zarr store, a Dask array or a NumPy
    array: the same bits."""
    from streamae import _chunkread

    X, params = make_problem(203, 8, 5)
    path = write_zarr(X, 10)  # 21 chunks, the last of 3 rows
    monkeypatch.setattr(_passes, "STREAM_BYTES", 0)  # one task per chunk
    reference = _eval_bits(open_dataset(path), params, strategy, read_ahead=0)
    assert reference[0] == 21
    seen = {}
    for min_tasks, stream_bytes in [(8, 0), (8, 2**30), (1, 2**30), (1, 3 * 10 * 8 * 8)]:
        monkeypatch.setattr(_passes, "MIN_TASKS", min_tasks)
        monkeypatch.setattr(_passes, "STREAM_BYTES", stream_bytes)
        for data in (da.from_zarr(path), np.asarray(X)):
            for scheduler in ("threads", "synchronous"):
                tasks, bits = _eval_bits(open_dataset(data, chunk_rows=10), params, strategy,
                                         scheduler=scheduler)
                assert bits == reference[1], (min_tasks, stream_bytes, type(data), scheduler)
        for read_ahead, read_bytes in [(0, 0), (1, 0), (3, 0), (2, 2**20)]:
            monkeypatch.setattr(_chunkread, "READ_BYTES", read_bytes)
            for scheduler in ("threads", "synchronous"):
                tasks, bits = _eval_bits(open_dataset(path), params, strategy,
                                         read_ahead=read_ahead, scheduler=scheduler)
                assert bits == reference[1], (min_tasks, stream_bytes, read_ahead, read_bytes,
                                              scheduler)
                seen.setdefault((min_tasks, stream_bytes), tasks)
    assert list(seen.values()) == [21, 7, 3, 7]  # groups of 1, 3, 9 and 3 chunks


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_tasks_of_several_subtrees_give_the_same_bits(strategy, make_problem, write_zarr,
                                                      monkeypatch):
    """split_every 4: tasks of 2 subtrees (of 1 or 4 chunks), the last task
    partial; a Zarr store, a NumPy array and a Dask array: the bits of one task
    per chunk."""
    X, params = make_problem(203, 8, 5)
    path = write_zarr(X, 10)  # 21 chunks
    monkeypatch.setattr(_passes, "STREAM_BYTES", 0)
    tasks, reference = _eval_bits(open_dataset(path), params, strategy, split_every=4)
    assert tasks == 21
    monkeypatch.setattr(_passes, "STREAM_BYTES", 2**30)
    for min_tasks, expected in [(8, 11), (2, 3)]:  # runs of 2 x 1 and 2 x 4 chunks
        monkeypatch.setattr(_passes, "MIN_TASKS", min_tasks)
        for data in (path, np.asarray(X), da.from_zarr(path)):
            tasks, bits = _eval_bits(open_dataset(data, chunk_rows=10), params, strategy,
                                     split_every=4)
            assert (tasks, bits) == (expected, reference), (min_tasks, type(data))


@pytest.mark.parametrize("kind", ["numpy", "dask"])
def test_in_memory_data_runs_in_streamed_tasks(kind, make_problem):
    """NumPy and Dask input in many small chunks: a few tasks per pass (runs
    of chunks), not one per chunk."""
    X, params = make_problem(4000, 8, 5)
    data = np.asarray(X) if kind == "numpy" else da.from_array(np.asarray(X), chunks=(10, 8))
    tasks, _ = _eval_bits(open_dataset(data, chunk_rows=10), params, "one-pass")
    assert tasks == 15  # 400 chunks in runs of 27 (split_every 3)


def test_eager_tree_sum_matches_tree():
    for count in (1, 2, 3, 7, 8, 9, 17, 64, 65):
        parts = [(np.array([0.1 * i]), 0.3 / (i + 1), np.array([i % 3, 100 - i]))
                 for i in range(count)]
        for split_every in (2, 3, 8):
            eager_tree = EagerTree(split_every)
            for part in parts:
                eager_tree.add(part)
            eager = eager_tree.result()
            lazy = dask.compute(tree([dask.delayed(q) for q in parts], split_every),
                                scheduler="synchronous")[0]
            assert eager[0].tobytes() == lazy[0].tobytes() and eager[1] == lazy[1]
            assert_array_equal(eager[2], lazy[2])


def test_stream_group_is_whole_subtrees_set_by_the_layout(monkeypatch):
    monkeypatch.setattr(_passes, "STREAM_BYTES", 2**30)
    assert stream_group(16, 16 * 2**20, 8) == 2         # 16 chunks: 8 tasks
    assert stream_group(1000, 256_000, 8) == 64         # 1,000 chunks: 16 tasks
    assert stream_group(4000, 64_000, 8) == 256         # 4,000 chunks: 16 tasks
    assert stream_group(10_000, 25_600, 8) == 1024      # 10,000 chunks: 10 tasks
    assert stream_group(640_000, 16 * 2**20, 8) == 64   # 10 TB of 16 MiB: 1 GiB tasks
    assert stream_group(100, 2**31, 8) == 1             # chunks over STREAM_BYTES
    assert stream_group(7, 2**20, 8) == 1               # fewer chunks than MIN_TASKS
    assert stream_group(1000, 1000, 3) == 81            # 3 has no divisor but 1
    assert [subtree_size(r, 8) for r in (1, 2, 4, 8, 64, 256, 1024)] == [1, 1, 1, 8, 64, 64,
                                                                         512]


def test_read_ahead_is_validated(make_problem, write_zarr):
    X, _ = make_problem(20, 4, 2)
    dataset = open_dataset(write_zarr(X, 5))
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="read_ahead must be an integer >= 0"):
            Evaluator(dataset, make_hyper(0.1, 3.0, 0.0), read_ahead=bad)


def test_an_unreadable_chunk_is_named_with_its_rows(make_problem, write_zarr, hyper_kw):
    import os

    X, params = make_problem(M, 8, 5)
    path = write_zarr(X, 10)  # compressed (zstd): a damaged chunk cannot be decoded
    with open(os.path.join(path, "c", "3", "0"), "wb") as f:
        f.write(b"not zstd")
    for read_ahead in (0, 2):  # chunks read together, then found one by one
        with pytest.raises(DataError) as info:
            Evaluator(open_dataset(path), make_hyper(**hyper_kw), read_ahead=read_ahead,
                      strategy="one-pass")(params)
        msg = str(info.value)
        assert "\n" not in msg and path in msg and "chunk 3 (rows 30-39)" in msg
        assert "cannot read" in msg


def test_numpy_input_is_used_in_place(make_problem):
    """NumPy input is neither copied by open_dataset nor by the evaluator's runs
    (dask.array.from_array would copy it): the tasks see views of the array."""
    X, _ = make_problem(400, 8, 5)
    X = np.asarray(X)
    dataset = open_dataset(X, chunk_rows=10)
    chunk, = dask.compute(dataset.array.to_delayed().ravel()[3], scheduler="synchronous")
    assert np.shares_memory(chunk, X)
    ev = Evaluator(dataset, make_hyper(0.1, 3.0, 1e-3), dtype="float64")
    (data, where), *_ = ev.data_pass.plan()
    block, = dask.compute(data, scheduler="synchronous")
    assert np.shares_memory(block, X) and block.shape == (where[-1] - where[0], 8)
