"""Local chunk reads: the same bytes as Zarr's own reads, and never a vanished
store read as fill values."""

import copy
import os
import pickle

import dask.array as da
import numpy as np
import pytest
import zarr
from zarr.codecs import BytesCodec

from streamae import DataError, SparseAutoencoder, _chunkfiles
from streamae._chunkread import LocalChunks, as_dask
from streamae._data import open_dataset
from streamae._objective import init_params


def _store(path, X, chunks, **kwargs):
    z = zarr.create_array(str(path), shape=X.shape, chunks=chunks, dtype=X.dtype, **kwargs)
    z[...] = X
    return zarr.open_array(str(path), mode="r")


def _blocks(array):
    return [np.asarray(array.blocks[i].compute(scheduler="synchronous"))
            for i in range(array.numblocks[0])]


@pytest.fixture
def X(rng):
    return rng.random((103, 7)).astype(np.float32)


@pytest.mark.parametrize("fmt", [2, 3])
def test_uncompressed_local_store_is_read_directly_and_exactly(tmp_path, X, fmt):
    z = _store(tmp_path / "x.zarr", X, (20, 7), compressors=None, zarr_format=fmt)
    assert LocalChunks.for_array(z).direct
    array = as_dask(z, 20)
    assert array.chunks == ((20, 20, 20, 20, 20, 3), (7,))
    blocks = _blocks(array)
    for got, want in zip(blocks, np.split(X, range(20, 103, 20))):
        assert got.dtype == X.dtype and got.flags.c_contiguous and got.flags.writeable
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("kwargs", [
    {},  # zarr's default compressor (zstd)
    {"compressors": None, "shards": (40, 7)},
    {"compressors": None, "serializer": BytesCodec(endian="big")},
])
def test_other_layouts_go_through_zarr(tmp_path, X, kwargs):
    z = _store(tmp_path / "x.zarr", X, (20, 7), **kwargs)
    assert not LocalChunks.for_array(z).direct
    np.testing.assert_array_equal(as_dask(z, 20).compute(), X)


def test_column_chunks_and_other_task_rows_go_through_zarr(tmp_path, X):
    z = _store(tmp_path / "cols.zarr", X, (20, 4), compressors=None)
    assert not LocalChunks.for_array(z).direct
    np.testing.assert_array_equal(as_dask(z, 20).compute(), X)
    z = _store(tmp_path / "rows.zarr", X, (20, 7), compressors=None)
    local = LocalChunks.for_array(z)
    assert local._read_whole_chunks((slice(0, 30), slice(0, 7))) is None  # ends mid-chunk
    np.testing.assert_array_equal(as_dask(z, 30).compute(), X)


def test_missing_chunk_files_read_as_fill_value(tmp_path, X):
    X = X.copy()
    X[40:60] = 0.0  # an all-fill chunk: zarr does not write its file
    z = _store(tmp_path / "x.zarr", X, (20, 7), compressors=None)
    assert not os.path.exists(tmp_path / "x.zarr" / "c" / "2" / "0")
    np.testing.assert_array_equal(as_dask(z, 20).compute(), X)


def test_wrong_sized_chunk_file_gets_zarrs_answer(tmp_path, X):
    z = _store(tmp_path / "x.zarr", X, (20, 7), compressors=None)
    chunk = tmp_path / "x.zarr" / "c" / "1" / "0"
    chunk.write_bytes(chunk.read_bytes()[:100])
    direct = LocalChunks.for_array(z)
    assert direct._read_whole_chunks((slice(20, 40), slice(0, 7))) is None
    with pytest.raises(Exception) as from_zarr:
        z[20:40]
    with pytest.raises(type(from_zarr.value)):
        as_dask(z, 20).compute()


def test_partial_selections_and_pickling(tmp_path, X):
    z = _store(tmp_path / "x.zarr", X, (20, 7), compressors=None)
    direct = pickle.loads(pickle.dumps(LocalChunks.for_array(z)))
    np.testing.assert_array_equal(direct[5:33, 1:4], X[5:33, 1:4])
    np.testing.assert_array_equal(direct[100:103, :], X[100:103])
    np.testing.assert_array_equal(direct[20:40, :], X[20:40])


def test_evaluation_is_bit_identical_to_zarr_reads(tmp_path, rng):
    X = rng.random((500, 12)).astype(np.float32)
    z = _store(tmp_path / "x.zarr", X, (64, 12), compressors=None)
    assert "read-zarr" in open_dataset(z).array.name
    model = SparseAutoencoder.from_weights(**init_params(12, 5, np.random.default_rng(1)),
                                           rho=0.1, beta=3.0, weight_decay=1e-3,
                                           dtype="float32")
    direct = copy.copy(model).set_params(run_options={"chunk_rows": 64}).cost_and_grad(
        str(tmp_path / "x.zarr"))
    through_zarr = model.cost_and_grad(da.from_zarr(z, chunks=(64, 12)))
    assert direct[0] == through_zarr[0]
    for key in direct[1]:
        np.testing.assert_array_equal(direct[1][key], through_zarr[1][key])


@pytest.mark.parametrize("kwargs", [{"compressors": None}, {}], ids=["direct", "zstd"])
def test_a_vanished_store_is_an_error_not_fill_values(tmp_path, X, kwargs):
    _store(tmp_path / "x.zarr", X, (20, 7), **kwargs)
    dataset = open_dataset(str(tmp_path / "x.zarr"))
    np.testing.assert_array_equal(dataset.array.compute(), X)
    os.rename(tmp_path / "x.zarr", tmp_path / "moved.zarr")
    with pytest.raises(DataError, match=r"x\.zarr' is gone on .*metadata 'zarr\.json' is "
                                        r"missing.*every worker must see the store"):
        dataset.array.compute()


@pytest.fixture
def model_and_store(tmp_path, rng):
    """A model of 6 inputs and the dataset of a 300 x 6 uncompressed store of 3 chunks."""
    X = rng.random((300, 6)).astype(np.float32)
    _store(tmp_path / "x.zarr", X, (100, 6), compressors=None)
    model = SparseAutoencoder.from_weights(**init_params(6, 3, np.random.default_rng(1)),
                                           rho=0.1, beta=3.0, weight_decay=1e-3)
    return model, open_dataset(str(tmp_path / "x.zarr"))


def test_a_vanished_store_stops_an_evaluation(tmp_path, model_and_store):
    model, dataset = model_and_store
    model.cost_and_grad(dataset.array)
    os.rename(tmp_path / "x.zarr", tmp_path / "moved.zarr")
    with pytest.raises(DataError, match="is gone"):
        model.cost_and_grad(dataset.array)


def test_a_store_workers_do_not_see_is_an_error_on_a_cluster(tmp_path, model_and_store):
    from cluster_fixtures import local_cluster

    model, dataset = model_and_store
    os.rename(tmp_path / "x.zarr", tmp_path / "elsewhere.zarr")
    with local_cluster(2) as client:
        with pytest.raises(DataError, match="is gone on .*every worker must see the store"):
            model.set_params(run_options={"scheduler": client}).cost_and_grad(dataset.array)


def test_tasks_of_several_whole_chunks_are_read_directly(tmp_path, X):
    z = _store(tmp_path / "x.zarr", X, (20, 7), compressors=None)
    local = LocalChunks.for_array(z)
    for rows in [(0, 60), (40, 103), (0, 103), (100, 103)]:
        got = local._read_whole_chunks((slice(*rows), slice(0, 7)))
        np.testing.assert_array_equal(got, X[slice(*rows)])
    assert local._read_whole_chunks((slice(10, 60), slice(0, 7))) is None  # starts mid-chunk
    blocks = _blocks(as_dask(z, 60))
    assert [b.shape[0] for b in blocks] == [60, 43]
    np.testing.assert_array_equal(np.concatenate(blocks), X)


def test_small_chunks_are_grouped_into_tasks_and_messages_name_the_chunk(tmp_path, X,
                                                                         monkeypatch):
    from streamae import _data

    X = X.copy()
    _store(tmp_path / "x.zarr", X, (20, 7), compressors=None)
    monkeypatch.setattr(_data, "TASK_BYTES", 16 * 2**20)  # the default, for 20-row chunks
    assert open_dataset(str(tmp_path / "x.zarr")).array.chunks[0] == (20,) * 5 + (3,)
    monkeypatch.setattr(_data, "MIN_TASKS", 2)  # 6 chunks: 2 tasks of 3 chunks
    assert open_dataset(str(tmp_path / "x.zarr")).array.chunks[0] == (60, 43)
    monkeypatch.setattr(_data, "MIN_TASKS", 1)
    assert open_dataset(str(tmp_path / "x.zarr")).array.chunks[0] == (103,)

    X[75, 2] = np.nan
    _store(tmp_path / "y.zarr", X, (20, 7), compressors=None)
    monkeypatch.setattr(_data, "TASK_BYTES", 3 * 20 * 7 * 4)  # three chunks per task
    dataset = open_dataset(str(tmp_path / "y.zarr"))
    assert dataset.array.chunks[0] == (60, 43) and dataset.unit_rows == 20
    message = _data.describe_bad_values(dataset, 75)
    assert message.startswith("'" + str(tmp_path / "y.zarr") + "', chunk 3 (rows 60-79): "
                              "1 NaN value(s) in rows 75;"), message
    model = SparseAutoencoder.from_weights(**init_params(7, 3, np.random.default_rng(1)),
                                           rho=0.1, beta=3.0, weight_decay=1e-3)
    with pytest.raises(DataError, match=r"chunk 3 \(rows 60-79\): 1 NaN value\(s\) in rows 75"):
        model.cost_and_grad(str(tmp_path / "y.zarr"))


# ----------------------------------------------------------------- around the page cache

@pytest.fixture
def paged(rng):
    """1,000 x 8 float32 in chunks of 128 rows: 4 KiB, a page, per chunk file."""
    return rng.random((1000, 8)).astype(np.float32)


def _read_all(z, rows, page_cache="auto"):
    local = LocalChunks.for_array(z, page_cache)
    blocks = [local[slice(a, min(a + rows, z.shape[0])), slice(0, z.shape[1])]
              for a in range(0, z.shape[0], rows)]
    return local, np.concatenate(blocks)


@pytest.mark.parametrize("mode", ["direct", "drop", "keep"])
def test_every_cache_mode_reads_the_same_values(tmp_path, paged, mode):
    z = _store(tmp_path / "x.zarr", paged, (128, 8), compressors=None)
    for rows in (128, 384):  # one chunk, three chunks (the last partial) per read
        local, got = _read_all(z, rows, mode)
        assert local.cache_mode == mode
        np.testing.assert_array_equal(got, paged)


def test_o_direct_refused_falls_back_to_dropping_pages(tmp_path, paged, monkeypatch):
    """A file system that refuses O_DIRECT (EINVAL, as tmpfs before Linux 6.6):
    the reads go through the cache and drop it, with the same values."""
    import errno

    from streamae import _chunkread

    real_open = os.open

    def refusing_open(path, flags, *args, **kwargs):
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument", path)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(_chunkread.os, "open", refusing_open)
    z = _store(tmp_path / "x.zarr", paged, (128, 8), compressors=None)
    local, got = _read_all(z, 256, "direct")
    np.testing.assert_array_equal(got, paged)
    assert local.cache_mode == "drop"


def test_unaligned_chunks_are_read_without_o_direct(tmp_path, X):
    z = _store(tmp_path / "x.zarr", X, (20, 7), compressors=None)  # 560-byte chunks
    np.testing.assert_array_equal(_read_all(z, 60, "direct")[1], X)


def test_auto_mode_bypasses_the_cache_only_for_stores_larger_than_memory(tmp_path, paged,
                                                                         monkeypatch):
    import psutil


    z = _store(tmp_path / "x.zarr", paged, (128, 8), compressors=None)
    assert LocalChunks.for_array(z).cache_mode == "keep"
    total = psutil.virtual_memory().total
    monkeypatch.setattr(type(z), "nbytes", property(lambda self: total))
    assert LocalChunks.for_array(z).cache_mode == "direct"
    compressed = _store(tmp_path / "y.zarr", paged, (128, 8))
    assert LocalChunks.for_array(compressed).cache_mode == "keep"


def test_read_ahead_and_page_cache_options_change_no_bits(tmp_path, rng):
    """A fit on an uncompressed store with every page-cache mode and read-ahead
    0, 1 and 5 (tasks of several chunks): the same model, bit for bit."""
    X = rng.uniform(0.1, 0.9, size=(1200, 8))
    path = str(tmp_path / "x.zarr")
    z = zarr.create_array(path, shape=X.shape, chunks=(100, 8), dtype="float64",
                          compressors=None)
    z[...] = X
    fits = {}
    for page_cache, read_ahead in [("auto", None), ("direct", 0), ("drop", 1), ("keep", 5)]:
        model = SparseAutoencoder(n_hidden=3, max_iter=5, dtype="float64", warmup="none",
                                  run_options={"page_cache": page_cache,
                                               "read_ahead": read_ahead, "split_every": 2})
        model.fit(path)
        fits[page_cache] = model.W1_.tobytes() + model.b2_.tobytes()
    assert len(set(fits.values())) == 1


def test_read_buffers_are_reused_only_when_nothing_refers_to_them():
    from streamae._chunkread import ReadBuffers

    buffers = ReadBuffers()
    first = buffers.take(512, 8, np.float64)
    assert first.ctypes.data % 4096 == 0 and first.shape == (512, 8)
    view = first[100:200]  # a batch still in use, through a view
    del first
    second = buffers.take(512, 8, np.float64)
    assert not np.shares_memory(second, view)
    address = second.ctypes.data
    del second
    third = buffers.take(256, 8, np.float32)  # smaller: fits in the freed buffer
    assert third.ctypes.data == address and third.ctypes.data % 4096 == 0
    del view
    assert len(buffers._allocations) == 2
    del third
    held = buffers.take(512, 8, np.float64)
    bigger = buffers.take(1024, 8, np.float64)  # the free one is too small: dropped
    assert len(buffers._allocations) == 2 and not np.shares_memory(held, bigger)


@pytest.mark.skipif(not _chunkfiles.AVAILABLE, reason="the compiled reads are Linux's")
def test_compiled_reads_of_many_chunks_answer_as_reads_from_python(tmp_path, X):
    """Several chunks in one read go through `_chunkfiles.read_files`: the same
    bytes; a missing chunk (fill value), a chunk file of another size (Zarr's
    answer) and a vanished store (an error) are answered as one chunk at a time."""
    X = X.copy()
    X[40:60] = 0.0  # zarr writes no file for an all-fill chunk
    z = _store(tmp_path / "x.zarr", X, (20, 7), compressors=None)
    local = LocalChunks.for_array(z, "keep")
    names, starts = _chunkfiles.packed_names(
        [str(tmp_path / "x.zarr" / "c" / str(i) / "0") for i in range(6)])
    out = np.zeros((120, 7), np.float32)
    status = _chunkfiles.read_files(names, starts, out.reshape(-1).view(np.uint8),
                                    np.arange(6, dtype=np.int64) * 560,
                                    np.array([560] * 5 + [3 * 28], np.int64), 560, False)
    assert status.tolist() == [0, 0, _chunkfiles.NOT_OPENED, 0, 0, 0]
    np.testing.assert_array_equal(out[:40], X[:40])
    np.testing.assert_array_equal(out[60:103], X[60:103])
    np.testing.assert_array_equal(local[0:103, 0:7], X)  # the missing chunk as zeros
    chunk = tmp_path / "x.zarr" / "c" / "3" / "0"
    chunk.write_bytes(chunk.read_bytes()[:100])
    assert local._read_whole_chunks((slice(0, 103), slice(0, 7))) is None  # Zarr decides
    with pytest.raises(ValueError):  # Zarr's own answer to the short chunk file
        z[60:80]
    for name in os.listdir(tmp_path / "x.zarr"):
        if name == "zarr.json":
            os.remove(tmp_path / "x.zarr" / name)
    with pytest.raises(DataError, match="is gone"):
        local._read_whole_chunks((slice(0, 60), slice(0, 7)))
