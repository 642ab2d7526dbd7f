"""Damaged and unusual stores: a chunk that cannot be read or decoded is a one-line
DataError naming the store, the chunk and its rows, on every local scheduler;
float16, booleans and big-endian values train as their native equivalents."""

import numpy as np
import pytest
import zarr
from numpy.testing import assert_array_equal

from streamae import DataError, SparseAutoencoder
from streamae._chunkread import chunk_error
from streamae.cli import main

FIT = dict(max_iter=2)


def _store(path, X, dtype=None, compressed=False):
    z = zarr.create_array(str(path), shape=X.shape, chunks=(10, X.shape[1]),
                          dtype=dtype or X.dtype, **({} if compressed else {"compressors": None}))
    z[...] = X
    return str(path)


@pytest.fixture
def X(rng):
    return rng.uniform(0.1, 0.9, size=(40, 4))


@pytest.fixture
def cut_short(tmp_path, X):
    """An uncompressed store whose chunk 2 (rows 20-29) lost the end of its file."""
    path = _store(tmp_path / "cut.zarr", X)
    chunk = tmp_path / "cut.zarr" / "c" / "2" / "0"
    chunk.write_bytes(chunk.read_bytes()[:100])
    return path


@pytest.fixture
def corrupt(tmp_path, X):
    """A compressed store whose chunk 1 (rows 10-19) holds bytes that do not decompress."""
    path = _store(tmp_path / "zstd.zarr", X, compressed=True)
    chunk = tmp_path / "zstd.zarr" / "c" / "1" / "0"
    data = bytearray(chunk.read_bytes())
    data[:8] = b"\xff" * 8  # no zstd frame starts like this
    chunk.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("scheduler", ["synchronous", "threads", "processes"])
@pytest.mark.parametrize("damaged, chunk, rows, reason", [
    ("cut_short", 2, "20-29", "ValueError: "),
    ("corrupt", 1, "10-19", "Error"),
])
def test_a_damaged_chunk_is_named(damaged, chunk, rows, reason, scheduler, request):
    path = request.getfixturevalue(damaged)
    with pytest.raises(DataError) as info:
        SparseAutoencoder(n_hidden=2, run_options={"scheduler": scheduler}, **FIT).fit(path)
    message = str(info.value)
    assert message.startswith(f"cannot read '{path}', chunk {chunk} (rows {rows}): ")
    assert reason in message and "restore the store from a good copy" in message
    assert "\n" not in message


def test_the_cli_says_it_in_one_line(cut_short, tmp_path, capsys):
    assert main(["train", cut_short, "--out", str(tmp_path / "m.zarr"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"cannot read '{cut_short}', chunk 2 (rows 20-29)" in err
    assert not (tmp_path / "m.zarr").exists()


def test_encode_of_a_damaged_store_names_the_chunk(cut_short, tmp_path):
    model = SparseAutoencoder.from_weights(np.zeros((2, 4)), np.zeros(2), np.zeros((4, 2)),
                                           np.zeros(4))
    with pytest.raises(DataError, match=r"chunk 2 \(rows 20-29\)"):
        model.transform(cut_short)


def test_chunk_error_message():
    error = chunk_error("x.zarr", 3, 30, 40, RuntimeError("Zstd decompression error\nmore"))
    assert str(error) == (
        "cannot read 'x.zarr', chunk 3 (rows 30-39): RuntimeError: Zstd decompression error; "
        "the chunk's file is damaged (cut short, or bytes that do not decode): restore the "
        "store from a good copy, or write it again (`streamae import`, `streamae patches`)")


@pytest.mark.parametrize("stored, same_as", [
    ("float16", "float32"),   # float16 widened exactly, chunk by chunk
    (">f8", "<f8"),           # big-endian read as native
    (">f4", "<f4"),
    ("bool", "uint8"),
])
def test_unusual_dtypes_train_like_their_native_equivalent(stored, same_as, tmp_path, rng):
    X = rng.uniform(0, 1, size=(40, 4))
    if stored == "bool":
        X = X > 0.5
    X = X.astype(stored)
    a = SparseAutoencoder(n_hidden=2, dtype="float64", **FIT).fit(
        _store(tmp_path / "a.zarr", X))
    b = SparseAutoencoder(n_hidden=2, dtype="float64", **FIT).fit(
        _store(tmp_path / "b.zarr", X.astype(same_as)))
    assert_array_equal(a.W1_, b.W1_)
    assert a.history_[-1]["cost"] == b.history_[-1]["cost"]


def test_complex_values_are_refused_up_front(tmp_path):
    with pytest.raises(DataError, match="has complex dtype complex128; streamae trains on real"):
        SparseAutoencoder(n_hidden=2, **FIT).fit(np.full((10, 4), 0.5 + 0j))


def test_floats_wider_than_64_bits_are_refused_up_front():
    X = np.full((10, 4), 0.5, dtype=np.longdouble)
    if X.dtype.itemsize <= 8:
        pytest.skip("longdouble is float64 on this platform")
    with pytest.raises(DataError, match=r"convert it to float64 first"):
        SparseAutoencoder(n_hidden=2, **FIT).fit(X)


def test_a_damaged_chunk_in_another_store_is_named(X):
    """Stores other than local folders (memory here; object stores) are read through
    ZarrChunks, which names the chunk the same way."""
    from zarr.core.buffer import default_buffer_prototype
    from zarr.storage import MemoryStore

    store = MemoryStore()
    z = zarr.create_array(store, shape=X.shape, chunks=(10, 4), dtype="f8")
    z[...] = X
    data = store._store_dict["c/1/0"].to_bytes()
    store._store_dict["c/1/0"] = default_buffer_prototype().buffer.from_bytes(
        b"\xff" * 8 + data[8:])
    with pytest.raises(DataError, match=r"^cannot read 'memory://\d+', chunk 1 \(rows 10-19\): "
                                        r".*restore the store from a good copy"):
        SparseAutoencoder(n_hidden=2, **FIT).fit(z)
