"""streamae import: .npy and Zarr sources, rechunking, min-max scaling, errors."""

import numpy as np
import pytest
import zarr
from numpy.testing import assert_allclose, assert_array_equal

from streamae import DataError, OutputExistsError, ParameterError
from streamae._import import _Source, apply_scale, import_array
from streamae.cli import main


def _read(path):
    z = zarr.open_array(str(path), mode="r")
    return z[...], dict(z.attrs)["streamae"], z


@pytest.fixture
def data(rng):
    X = rng.normal(3.0, 2.0, size=(1001, 7))
    X[:, 4] = 5.0  # a constant column
    return X


@pytest.mark.parametrize("dtype, out_dtype", [
    ("float64", "float64"), ("float32", "float32"), ("uint8", "float32"), ("int64", "float64")])
@pytest.mark.parametrize("chunk_rows", [1001, 100, 333])
def test_npy_round_trip(tmp_path, data, dtype, out_dtype, chunk_rows):
    X = (np.abs(data) * 10).astype(dtype)
    np.save(tmp_path / "x.npy", X)
    meta = import_array(tmp_path / "x.npy", tmp_path / "x.zarr",
                        run_options={"chunk_rows": chunk_rows})
    got, attrs, z = _read(tmp_path / "x.zarr")
    assert got.dtype == out_dtype and z.chunks == (chunk_rows, 7)
    assert_array_equal(got, X.astype(out_dtype))
    assert attrs == meta and attrs["scale"] == {"method": "none"}
    assert attrs["shape"] == [1001, 7] and attrs["source_dtype"] == dtype
    assert attrs["value_range"] == [float(got.min()), float(got.max())]


def test_fortran_order_npy(tmp_path, data):
    np.save(tmp_path / "f.npy", np.asfortranarray(data))
    import_array(tmp_path / "f.npy", tmp_path / "f.zarr", run_options={"chunk_rows": 128})
    assert_array_equal(_read(tmp_path / "f.zarr")[0], data)


def test_npy_is_read_a_block_at_a_time(tmp_path, data):
    np.save(tmp_path / "x.npy", data)
    source = _Source(tmp_path / "x.npy")
    block = source.rows(200, 260)
    assert block.shape == (60, 7) and not isinstance(block, np.memmap)
    assert_array_equal(block, data[200:260])


def test_zarr_rechunked(tmp_path, data, write_zarr):
    src = write_zarr(data, 64, name="src.zarr")
    # Also a store chunked along columns: rows are gathered across chunks.
    z = zarr.create_array(str(tmp_path / "cols.zarr"), shape=data.shape, chunks=(300, 2),
                          dtype="float64")
    z[...] = data
    for source in (src, str(tmp_path / "cols.zarr")):
        out = tmp_path / f"out-{source[-8:]}"
        import_array(source, out, run_options={"chunk_rows": 250}, dtype="float32")
        got, attrs, zo = _read(out)
        assert zo.chunks == (250, 7) and got.dtype == np.float32
        assert_array_equal(got, data.astype(np.float32))


def test_minmax_per_column_and_reuse(tmp_path, data):
    np.save(tmp_path / "x.npy", data)
    import_array(tmp_path / "x.npy", tmp_path / "s.zarr", scale="minmax",
                 run_options={"chunk_rows": 100},
                 dtype="float64")
    got, attrs, _ = _read(tmp_path / "s.zarr")
    lo, hi = data.min(axis=0), data.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    assert_allclose(got, (data - lo) / span, rtol=0, atol=1e-15)
    assert got.min() == 0.0 and got.max() == 1.0
    assert_array_equal(got[:, 4], 0.0)  # constant column
    scale = attrs["scale"]
    assert scale["method"] == "minmax" and scale["axis"] == "column"
    assert_array_equal(scale["min"], lo) and assert_array_equal(scale["max"], hi)
    assert_array_equal(apply_scale(data, scale), got)

    # New data brought to the same scale (it may fall outside [0, 1]).
    new = data[:10] * 1.5
    np.save(tmp_path / "new.npy", new)
    import_array(tmp_path / "new.npy", tmp_path / "new.zarr", scale_from=tmp_path / "s.zarr",
                 dtype="float64")
    got_new, attrs_new, _ = _read(tmp_path / "new.zarr")
    assert_allclose(got_new, (new - lo) / span, atol=1e-15)
    assert attrs_new["scale"]["from"] == str(tmp_path / "s.zarr")


def test_minmax_over_all_values(tmp_path, data, write_zarr):
    src = write_zarr(data.astype(np.float32), 100)
    import_array(src, tmp_path / "s.zarr", scale="minmax-all")
    got, attrs, _ = _read(tmp_path / "s.zarr")
    X = data.astype(np.float32).astype(np.float64)
    assert_allclose(got, ((X - X.min()) / (X.max() - X.min())).astype(np.float32))
    assert attrs["scale"]["axis"] == "all" and np.ndim(attrs["scale"]["min"]) == 0


def test_bad_values_and_inputs(tmp_path, data):
    bad = data.copy()
    bad[517, 2] = np.nan
    bad[900, 0] = np.inf
    np.save(tmp_path / "bad.npy", bad)
    for scale in ("none", "minmax"):
        with pytest.raises(DataError, match=r"rows 500-599: 1 NaN or infinite value\(s\) in "
                                            r"rows 517;"):
            import_array(tmp_path / "bad.npy", tmp_path / "bad.zarr", scale=scale,
                         run_options={"chunk_rows": 100})
        assert not (tmp_path / "bad.zarr").exists()
        assert not list(tmp_path.glob(".bad.zarr*"))
    np.save(tmp_path / "cube.npy", np.zeros((4, 3, 2)))
    with pytest.raises(DataError, match=r"shape \(4, 3, 2\) \(3-D\).*reshape"):
        import_array(tmp_path / "cube.npy", tmp_path / "c.zarr")
    with pytest.raises(DataError, match="no file"):
        import_array(tmp_path / "missing.npy", tmp_path / "c.zarr")
    with pytest.raises(DataError, match="no data at"):
        import_array(tmp_path / "missing.zarr", tmp_path / "c.zarr")
    with pytest.raises(ParameterError, match="unknown scale"):
        import_array(tmp_path / "bad.npy", tmp_path / "c.zarr", scale="zscore")
    np.save(tmp_path / "x.npy", data)
    import_array(tmp_path / "x.npy", tmp_path / "x.zarr")
    with pytest.raises(OutputExistsError):
        import_array(tmp_path / "x.npy", tmp_path / "x.zarr")
    with pytest.raises(DataError, match="no recorded scale"):
        import_array(tmp_path / "x.npy", tmp_path / "y.zarr", scale_from=tmp_path / "x.zarr")


def test_cli(tmp_path, data, capsys):
    np.save(tmp_path / "x.npy", data)
    assert main(["import", str(tmp_path / "x.npy"), str(tmp_path / "raw.zarr"), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "imported" in captured.out and "--scale minmax" in captured.err  # out of [0, 1]
    assert main(["import", str(tmp_path / "x.npy"), str(tmp_path / "s.zarr"), "--scale",
                 "minmax", "--chunk-rows", "500", "--quiet"]) == 0
    assert _read(tmp_path / "s.zarr")[2].chunks == (500, 7)
    assert main(["import", str(tmp_path / "x.npy"), str(tmp_path / "s.zarr"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already exists" in err
