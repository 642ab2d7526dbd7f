"""Hints: each interface in its own words (keywords in Python, flags on the command
line), the right advice for the data at hand, and no folders left by a failed command."""

import os

import numpy as np
import pytest

from streamae import OutputExistsError, SparseAutoencoder, write_patches
from streamae._store import write_array
from streamae.cli import build_parser, in_cli_words, main


def _parser(command):
    return build_parser().commands[command]


@pytest.mark.parametrize("message, command, expected", [
    ("pass `overwrite=True` to replace it", "train", "pass --overwrite to replace it"),
    ("start over with `overwrite=True` and `resume=False`", "train",
     "start over with --overwrite and without --resume"),
    ("use `size=5` or less, or raise `max_side`", "patches",
     "use --size 5 or less, or raise --max-side"),
    ("use `channels='gray'`", "show", "use --channels gray"),
    ("give `images=DIR` or `builtin=True`", "patches", "give --images DIR or --builtin"),
    ("smaller tasks (`chunk_rows`)", "train", "smaller tasks (--chunk-rows)"),
    ("`storage_options` key=...", "train", "--storage-option key=..."),
    # not an option of the command, or not a keyword: unchanged
    ("give `out` (a local directory)", "patches", "give `out` (a local directory)"),
    ("run `streamae import x.npy x.zarr`", "train", "run `streamae import x.npy x.zarr`"),
])
def test_the_cli_shows_keywords_as_its_flags(message, command, expected):
    assert in_cli_words(message, _parser(command)) == expected


def test_each_interface_in_its_own_words(tmp_path, capsys):
    model = SparseAutoencoder.from_weights(np.zeros((2, 4)), np.zeros(2), np.zeros((4, 2)),
                                           np.zeros(4))
    model.save(tmp_path / "m.zarr")
    with pytest.raises(OutputExistsError) as info:
        model.save(tmp_path / "m.zarr")
    assert "`overwrite=True`" in str(info.value) and "--" not in str(info.value)

    write_array(tmp_path / "x.zarr", np.full((20, 4), 0.5), chunk_rows=10)
    assert main(["train", str(tmp_path / "x.zarr"), "--out", str(tmp_path / "m.zarr"),
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "pass --overwrite to replace it" in err and "overwrite=True" not in err


def test_patches_from_an_empty_folder_says_builtin_in_each_interface(tmp_path, capsys):
    (tmp_path / "photos").mkdir()
    with pytest.raises(Exception, match="use `builtin=True`"):
        write_patches(tmp_path / "p.zarr", images=tmp_path / "photos", count=10)
    assert main(["patches", str(tmp_path / "p.zarr"), "--images", str(tmp_path / "photos"),
                 "--count", "10", "--quiet"]) == 2
    assert "or use --builtin for the built-in photographs" in capsys.readouterr().err


def _import(tmp_path, values, *extra, name="src.npy"):
    np.save(tmp_path / name, values)
    out = tmp_path / (name + ".zarr")
    assert main(["import", str(tmp_path / name), str(out), "--quiet", *extra]) == 0
    return out


def test_import_of_floats_out_of_range_suggests_minmax(tmp_path, capsys):
    _import(tmp_path, np.linspace(-1, 3, 40).reshape(10, 4))
    err = capsys.readouterr().err
    assert "--scale minmax (per column) or --scale minmax-all" in err


def test_import_of_integers_suggests_one_scale_for_all(tmp_path, capsys):
    _import(tmp_path, np.arange(40, dtype=np.uint8).reshape(10, 4))
    err = capsys.readouterr().err
    assert "these are integers: import again with --scale minmax-all" in err
    assert "--scale minmax " not in err and "per column" not in err


def test_import_with_scale_from_does_not_suggest_another_scale(tmp_path, capsys):
    train = _import(tmp_path, np.linspace(0, 1, 40).reshape(10, 4), "--scale", "minmax",
                    name="train.npy")
    capsys.readouterr()
    _import(tmp_path, np.linspace(-1, 3, 40).reshape(10, 4), "--scale-from", str(train),
            name="test.npy")
    err = capsys.readouterr().err
    assert f"with the scale recorded in {train}" in err
    assert "--scale minmax" not in err


def _entries(path):
    return sorted(p.relative_to(path).as_posix() for p in path.rglob("*"))


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A folder with a data store and a 64-input model, as the current directory."""
    monkeypatch.chdir(tmp_path)
    write_array("x.zarr", np.random.default_rng(0).uniform(0.1, 0.9, (40, 64)), chunk_rows=10)
    assert main(["train", "x.zarr", "--out", "m.zarr", "--hidden", "2", "--max-iter", "1",
                 "--quiet"]) == 0
    np.save("wide.npy", np.full((10, 65), 0.5))
    return tmp_path


@pytest.mark.parametrize("argv", [
    ["show", "m.zarr", "--patch-shape", "5x5"],
    ["show", "m.zarr", "--patch-shape", "5x5", "--out", "new/deeper/pics"],
    ["show", "m.zarr", "--patch-shape", "8x8", "--channels", "rgb"],
    ["show", "m.zarr", "--patch-shape", "eight", "--out", "pics"],
    ["show", "nope.zarr", "--out", "pics"],
    ["train", "nope.zarr", "--out", "new/model.zarr", "--quiet"],
    ["train", "x.zarr", "--out", "new/model.zarr", "--rho", "2", "--quiet"],
    ["encode", "m.zarr", "x.zarr", "new/h.zarr", "--chunk-rows", "7", "--scheduler", "nope"],
    ["import", "wide.npy", "new/w.zarr", "--scale-from", "nope.zarr", "--quiet"],
    ["import", "nope.npy", "new/w.zarr", "--quiet"],
    ["patches", "new/p.zarr", "--images", "nope", "--quiet"],
    ["patches", "new/p.zarr", "--builtin", "--size", "1", "--quiet"],
])
def test_a_failed_command_leaves_no_new_folder(workdir, argv, capsys):
    before = _entries(workdir)
    assert main(argv) == 2
    assert "streamae: error: " in capsys.readouterr().err
    assert _entries(workdir) == before
    assert not os.path.exists(workdir / "m-pictures")


# ----------------------------------------------------------------- data hints, per case

def _fit_error(data, **params):
    with pytest.raises(Exception) as info:
        SparseAutoencoder(n_hidden=2, max_iter=1, **params).fit(data)
    return str(info.value)


def _train_error(capsys, data, *extra):
    assert main(["train", str(data), "--out", str(data) + ".model", "--hidden", "2",
                 "--max-iter", "1", *extra]) == 2
    return capsys.readouterr().err


def test_nan_is_not_sent_to_a_rescaling_that_refuses_it(tmp_path, capsys):
    X = np.full((20, 4), 0.5)
    X[13, 2] = np.nan
    write_array(tmp_path / "nan.zarr", X, chunk_rows=10)
    for message in (_train_error(capsys, tmp_path / "nan.zarr", "--quiet"), _fit_error(X)):
        assert "1 NaN value(s) in rows 13" in message
        assert "remove the rows with NaN or inf, or replace those values" in message
        assert "minmax" not in message and "import" not in message, message


def test_a_whitened_store_with_the_sigmoid_decoder_is_told_linear(tmp_path, capsys):
    from streamae import whiten

    write_array(tmp_path / "raw.zarr", np.random.default_rng(1).normal(size=(60, 4)),
                chunk_rows=20)
    whiten(tmp_path / "raw.zarr", tmp_path / "w.zarr")
    err = _train_error(capsys, tmp_path / "w.zarr", "--quiet")
    assert err == (f"streamae: error: '{tmp_path / 'w.zarr'}' holds whitened data (written by "
                   "`streamae whiten`), whose values are not confined to [0, 1]; train on it "
                   "with --decoder linear\n")
    message = _fit_error(tmp_path / "w.zarr")
    assert "(written by `streamae.whiten`)" in message and "`decoder='linear'`" in message
    assert "minmax" not in message
    SparseAutoencoder(n_hidden=2, max_iter=1, decoder="linear").fit(tmp_path / "w.zarr")


def test_integer_data_is_told_one_scale_for_all_values(tmp_path, capsys):
    X = np.arange(80, dtype=np.uint8).reshape(20, 4)
    write_array(tmp_path / "pixels.zarr", X, chunk_rows=10)
    err = _train_error(capsys, tmp_path / "pixels.zarr", "--quiet")
    assert "the data are integers (uint8): divide them by 255 or rescale them all with one " \
           "scale, `streamae import --scale minmax-all`" in err
    message = _fit_error(X)
    assert "`streamae.import_array(src, out, scale='minmax-all')`" in message
    assert "streamae import --" not in message


def test_real_valued_floats_are_offered_minmax_or_the_linear_decoder(tmp_path, capsys):
    X = np.linspace(-2, 2, 80).reshape(20, 4)
    write_array(tmp_path / "real.zarr", X, chunk_rows=10)
    err = _train_error(capsys, tmp_path / "real.zarr", "--quiet")
    assert err.endswith("rescale it into [0, 1] with `streamae import --scale minmax`, or "
                        "train with --decoder linear (any finite values)\n")
    message = _fit_error(X)  # Python words: functions and keywords, no commands
    assert message.endswith("rescale it into [0, 1] with `streamae.import_array(src, out, "
                            "scale='minmax')` (or scikit-learn's MinMaxScaler), or use "
                            "`decoder='linear'` (any finite values)")


def test_an_imported_store_out_of_range_is_refused_from_its_metadata(tmp_path, capsys):
    out = _import(tmp_path, np.linspace(-1, 3, 40).reshape(10, 4))
    capsys.readouterr()
    err = _train_error(capsys, out, "--quiet")
    assert f"'{out}' holds values from -1 to 3 (recorded when it was imported)" in err


def test_bad_data_is_reported_before_the_kernels_compile(tmp_path, capsys):
    """The first chunk is looked at before the start-up work (logged phases)."""
    X = np.full((40, 4), 0.5)
    X[3, 1] = np.inf
    write_array(tmp_path / "inf.zarr", X, chunk_rows=10)
    err = _train_error(capsys, tmp_path / "inf.zarr")  # progress on: log lines on stderr
    assert "1 inf value(s) in rows 3" in err
    assert "compiling kernels" not in err and "data variance" not in err


def test_the_convergence_warning_names_a_checkpoint_only_when_there_is_one(tmp_path):
    from sklearn.exceptions import ConvergenceWarning

    X = np.random.default_rng(0).uniform(0.1, 0.9, (30, 4))
    with pytest.warns(ConvergenceWarning) as plain:
        SparseAutoencoder(n_hidden=2, max_iter=1).fit(X)
    assert "checkpoint" not in str(plain[0].message)
    assert str(plain[0].message).endswith("raise max_iter for a converged fit")
    ckpt = tmp_path / "run.ckpt"
    with pytest.warns(ConvergenceWarning) as saved:
        SparseAutoencoder(n_hidden=2, max_iter=1).fit(X, checkpoint=ckpt)
    assert f"(or resume the checkpoint '{ckpt}' with a larger max_iter)" in \
        str(saved[0].message)


# ----------------------------------------------------------------- mistyped commands and options

def test_a_mistyped_option_gets_its_command_usage_and_the_nearest_option(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "x.zarr", "--out", "m.zarr", "--hiden", "4"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: streamae train ")
    assert err.endswith("streamae train: error: unrecognized arguments: --hiden 4; did you "
                        "mean --hidden?\n")


def test_a_mistyped_command_gets_the_nearest_command(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["trian", "x.zarr"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith(
        "streamae: error: no command 'trian'; did you mean 'train'?")


def test_a_subcommand_error_prints_the_subcommands_usage(capsys):
    with pytest.raises(SystemExit):
        main(["encode", "m.zarr", "x.zarr", "out.zarr", "--chunk-rows", "0"])
    err = capsys.readouterr().err
    assert err.startswith("usage: streamae encode ") and "streamae encode: error: " in err


def test_no_exception_class_names_in_messages(tmp_path, capsys):
    """`show` on a data store (not a model): words, not ContainsArrayError."""
    write_array(tmp_path / "x.zarr", np.full((20, 4), 0.5), chunk_rows=10)
    (tmp_path / "folder").mkdir()
    for argv in (["show", str(tmp_path / "x.zarr")], ["show", str(tmp_path / "folder")],
                 ["train", str(tmp_path / "folder"), "--out", str(tmp_path / "m")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "Error" not in err and "Exception" not in err, err
    assert main(["show", str(tmp_path / "x.zarr")]) == 2
    assert capsys.readouterr().err == (
        f"streamae: error: '{tmp_path / 'x.zarr'}' is not a streamae model (a Zarr array is "
        "there, not a group); give the model folder that `streamae train --out` wrote\n")


# ----------------------------------------------------------------- optional packages

INSTALL = "(from a checkout of the source: `pip install \".[{0}]\"`)"


def test_set_output_pandas_without_pandas_says_how_to_install_it(monkeypatch):
    from streamae import MissingDependencyError

    monkeypatch.setitem(__import__("sys").modules, "pandas", None)  # as if not installed
    with pytest.raises(MissingDependencyError) as info:
        SparseAutoencoder().set_output(transform="pandas")
    assert str(info.value) == (
        "set_output(transform='pandas') needs the 'pandas' package, which is not installed; "
        "install it with `pip install \"streamae[pandas]\"` " + INSTALL.format("pandas"))
    assert isinstance(info.value, ImportError)


def test_set_output_pandas_with_pandas_gives_data_frames():
    pytest.importorskip("pandas")
    X = np.random.default_rng(0).uniform(0.1, 0.9, (20, 4))
    model = SparseAutoencoder(n_hidden=2, max_iter=1).fit(X).set_output(transform="pandas")
    assert list(model.transform(X).columns) == ["sparseautoencoder0", "sparseautoencoder1"]


def test_a_missing_distributed_names_its_extra_both_ways(monkeypatch):
    from streamae import ParameterError
    from streamae._backends import _require_distributed

    monkeypatch.setitem(__import__("sys").modules, "distributed", None)
    with pytest.raises(ParameterError) as info:
        _require_distributed("--workers")
    assert str(info.value).endswith(
        "install it with `pip install \"streamae[distributed]\"` " + INSTALL.format(
            "distributed"))


def test_an_s3_url_without_s3fs_names_its_extra_both_ways(monkeypatch):
    from streamae._data import describe_url_error

    message = describe_url_error("s3://bucket/x.zarr", ImportError("Install s3fs to access S3"))
    assert message == ("cannot read 's3://bucket/x.zarr' (Install s3fs to access S3); install "
                       "it with `pip install \"streamae[s3]\"` " + INSTALL.format("s3"))


def test_distributed_is_a_dependency_of_the_main_install():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    root = os.path.join(os.path.dirname(__file__), os.pardir)
    with open(os.path.join(root, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    assert any(d.startswith("distributed") for d in project["dependencies"])
