"""streamae encode: the same activations as transform, chunked for the next pass."""

import dask.array as da
import numpy as np
import pytest
import zarr
from helpers import sigmoid
from numpy.testing import assert_allclose, assert_array_equal

from streamae import DataError, OutputExistsError, SparseAutoencoder
from streamae._encode import encode
from streamae.cli import main


@pytest.fixture
def model(make_problem, hyper_kw):
    _, params = make_problem(10, 12, 5)
    return SparseAutoencoder.from_weights(**params, **hyper_kw, dtype="float64")


@pytest.fixture
def X(rng):
    return rng.uniform(0, 1, size=(1003, 12))



@pytest.mark.parametrize("chunk_rows", [1003, 100, 64])
def test_encode_equals_transform_in_chunks_for_the_next_pass(tmp_path, model, X, write_zarr,
                                                             chunk_rows):
    """Output chunks are whole input batches up to about 16 MiB, whatever the
    input's chunks (at most a quarter of the rows, but at least 1024: here all)."""
    data = write_zarr(X, chunk_rows)
    z = encode(model, data, tmp_path / "h.zarr")
    assert z.shape == (1003, 5) and z.chunks == (1003 // chunk_rows * chunk_rows, 5)
    assert z.dtype == np.float64
    H = z[...]
    assert_array_equal(H, model.transform(data))
    assert_allclose(H, sigmoid(X @ model.W1_.T + model.b1_), rtol=1e-13)
    attrs = dict(z.attrs)["streamae"]
    assert attrs["kind"] == "encoding" and attrs["n_hidden"] == 5


def test_sharded_input(tmp_path, model, X, write_zarr):
    data = write_zarr(X, 50, shards=(200, 12))
    z = encode(model, data, tmp_path / "h.zarr")
    assert z.chunks == (1000, 5) and z.shards is None  # batches of whole shards
    assert_array_equal(z[...], model.transform(data))


def test_saved_model_float32_and_in_memory_inputs(tmp_path, model, X):
    m32 = SparseAutoencoder.from_weights(**model.params_, dtype="float32")
    m32.save(tmp_path / "m.zarr")
    for i, data in enumerate((X, da.from_array(X, chunks=(300, 12)))):
        z = encode(str(tmp_path / "m.zarr"), data, tmp_path / f"h{i}.zarr")
        assert z.dtype == np.float32
        assert_allclose(z[...], sigmoid(X @ model.W1_.T + model.b1_), rtol=1e-5)
    assert zarr.open_array(str(tmp_path / "h1.zarr")).chunks == (900, 5)


def test_errors(tmp_path, model, rng, write_zarr, capsys):
    model.save(tmp_path / "m.zarr")
    wide = write_zarr(rng.uniform(size=(20, 13)), 10, name="wide.zarr")
    with pytest.raises(DataError, match="has 13 features, but SparseAutoencoder is expecting 12"):
        encode(model, wide, tmp_path / "h.zarr")
    assert not (tmp_path / "h.zarr").exists()
    assert main(["encode", str(tmp_path / "m.zarr"), wide, str(tmp_path / "h.zarr")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "expecting 12 features" in err
    ok = write_zarr(rng.uniform(size=(20, 12)), 10, name="ok.zarr")
    assert main(["encode", str(tmp_path / "m.zarr"), ok, str(tmp_path / "h.zarr"),
                 "--quiet"]) == 0
    assert "encoded 20 rows into 5 hidden activations" in capsys.readouterr().out
    with pytest.raises(OutputExistsError):
        encode(model, ok, tmp_path / "h.zarr")
    encode(model, ok, tmp_path / "h.zarr", overwrite=True, run_options={"chunk_rows": 7})
    assert zarr.open_array(str(tmp_path / "h.zarr")).chunks == (7, 5)
    with pytest.raises(DataError, match="no model at"):
        encode(str(tmp_path / "nothing.zarr"), ok, tmp_path / "h2.zarr")


def test_transform_out_writes_the_same_store(tmp_path, model, X, write_zarr):
    data = write_zarr(X, 128)
    z = model.transform(data, out=tmp_path / "t.zarr")
    assert isinstance(z, zarr.Array) and z.chunks == (896, 5)
    assert_array_equal(z[...], encode(model, data, tmp_path / "e.zarr")[...])
    assert_array_equal(z[...], model.transform(data))
