"""Every bad input a user can give the CLI and the API, with its exact message.

ROWS is the table of docs/bad-inputs.md, row for row: `test_docs_table_matches_rows`
fails if the two drift apart, and `test_bad_input` runs every row. Messages are
exact, except that ``…`` stands for text that comes from a library (Zarr,
argparse) and may change with its version.

CLI rows run ``streamae`` in-process in a scratch directory (so paths in
messages are the relative names shown) and check the exit status and the last
line on stderr; API rows check the exception class and ``str(exception)``.
"""

import errno
import json
import os
import re
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
import zarr

import streamae
from streamae import (
    CheckpointError,
    OutputWriteError,
    SparseAutoencoder,
    TrainingInterrupted,
    _store,
)
from streamae.cli import main

DOC = os.path.join(os.path.dirname(__file__), os.pardir, "docs", "bad-inputs.md")
BASE = ["--hidden", "3", "--max-iter", "2", "--quiet"]
ERR = "streamae: error: "
USAGE = "streamae train: error: "
BAD_DATA = "; the sigmoid decoder needs finite values in [0, 1]: "
NOT_FINITE = BAD_DATA + ("clean the data: remove the rows with NaN or inf, or replace those "
                         "values (rescaling does not remove them)")
OUT_OF_RANGE = BAD_DATA + ("rescale it into [0, 1] with `streamae import --scale minmax`, or "
                           "train with --decoder linear (any finite values)")
DAMAGED = ("; the chunk's file is damaged (cut short, or bytes that do not decode): restore "
           "the store from a good copy, or write it again (`streamae import`, "
           "`streamae patches`)")
START_OVER = "start over with --overwrite and without --resume"  # CLI words
API_START_OVER = "start over with `overwrite=True` and `resume=False`"  # Python words

# (id, input, interface, message, exit status or exception class)
ROWS = [
    # ---- data
    ("data-missing", "data path that does not exist", "CLI",
     ERR + "no data at 'nope.zarr': the path does not exist (check the path, or create a "
     "store with `streamae import`)", "2"),
    ("data-nan", "NaN in the data (row 5)", "CLI",
     ERR + "'nan.zarr', chunk 0 (rows 0-9): 1 NaN value(s) in rows 5" + NOT_FINITE, "2"),
    ("data-inf", "+Inf in the data (row 12)", "CLI",
     ERR + "'inf.zarr', chunk 1 (rows 10-19): 1 inf value(s) in rows 12" + NOT_FINITE, "2"),
    ("data-out-of-range", "values outside [0, 1] (rows 21, 22)", "CLI",
     ERR + "'range.zarr', chunk 2 (rows 20-29): 2 value(s) outside [0, 1] (from -0.5 to 1.5) "
     "in rows 21, 22" + OUT_OF_RANGE, "2"),
    ("data-1d", "1-D array", "CLI",
     ERR + "'vector.zarr' has shape (30,) (1-D); streamae needs a 2-D array of shape "
     "(samples, features): reshape it to one sample per row", "2"),
    ("data-3d", "3-D array", "CLI",
     ERR + "'cube.zarr' has shape (30, 2, 2) (3-D); streamae needs a 2-D array of shape "
     "(samples, features): reshape it to one sample per row", "2"),
    ("data-empty", "array with no rows", "CLI",
     ERR + "'empty.zarr' is empty (shape (0, 4)); it needs at least one row and one column",
     "2"),
    ("data-strings", "array of strings", "CLI",
     ERR + "'strings.zarr' has non-numeric dtype …; convert it to float32 or float64 with "
     "values in [0, 1]", "2"),
    ("data-group", "a Zarr group instead of an array", "CLI",
     ERR + "cannot open 'group.zarr' as a Zarr array (…); point to the array itself, not a "
     "group", "2"),
    ("data-plain-folder", "a folder that is not a Zarr store", "CLI",
     ERR + "no Zarr array at 'folder' (…); point to the array itself, not a group or a plain "
     "folder", "2"),
    ("data-npy", "a .npy file instead of a Zarr array", "CLI",
     ERR + "'x.npy' is a NumPy .npy file, not a Zarr array (a folder of chunks): convert it "
     "once with `streamae import x.npy x.zarr` (in Python streamae.import_array) and use "
     "x.zarr", "2"),
    ("data-csv", "a CSV file instead of a Zarr array", "CLI",
     ERR + "'x.csv' is a CSV file, not a Zarr array (a folder of chunks): load it with "
     "numpy.loadtxt('x.csv', delimiter=','), numpy.save it as x.npy, then convert it once "
     "with `streamae import x.npy x.zarr` (in Python streamae.import_array) and use x.zarr",
     "2"),
    ("data-uint8", "uint8 pixels from 2 to 255", "CLI",
     ERR + "'pixels.zarr', chunk 0 (rows 0-9): 40 value(s) outside [0, 1] (from 2 to 84) in "
     "rows 0, 1, 2, 3, 4, ... (10 rows); the sigmoid decoder needs finite values in [0, 1]: "
     "the data are integers (uint8): divide them by 255 or rescale them all with one scale, "
     "`streamae import --scale minmax-all`", "2"),
    ("data-chunk-cut-short", "a chunk file cut short (chunk 2)", "CLI",
     ERR + "cannot read 'cut.zarr', chunk 2 (rows 20-29): …" + DAMAGED, "2"),
    ("data-chunk-corrupt", "compressed bytes that do not decompress (chunk 1)", "CLI",
     ERR + "cannot read 'corrupt.zarr', chunk 1 (rows 10-19): …" + DAMAGED, "2"),
    ("data-complex", "complex values", "CLI",
     ERR + "'complex.zarr' has complex dtype complex128; streamae trains on real values "
     "(Complex data not supported): keep the real part or the magnitude (numpy.abs) and "
     "save that", "2"),
    ("api-data-nan", "NumPy array with NaN (row 3) to fit", "API",
     "the NumPy array, chunk 0 (rows 0-29): 1 NaN value(s) in rows 3" + NOT_FINITE, "DataError"),
    ("api-width", "data of 5 columns for a model of 4 (transform)", "API",
     "X has 5 features, but SparseAutoencoder is expecting 4 features as input (X is the "
     "NumPy array); use data of the width the model was trained on", "DataError"),
    ("api-not-fitted", "transform before fit", "API",
     "this SparseAutoencoder has no weights yet; call fit() first, or build one with "
     "SparseAutoencoder.from_weights() or load()", "NotFittedError"),
    # ---- flags
    ("flag-rho-0", "--rho 0", "CLI",
     ERR + "rho must be in (0, 1), got 0.0; a typical value is 0.01 to 0.1", "2"),
    ("flag-rho-1.5", "--rho 1.5", "CLI",
     ERR + "rho must be in (0, 1), got 1.5; a typical value is 0.01 to 0.1", "2"),
    ("flag-beta", "--beta -1", "CLI",
     ERR + "beta must be finite and >= 0, got -1.0; use 0 to turn sparsity off", "2"),
    ("flag-weight-decay", "--weight-decay -1", "CLI",
     ERR + "weight_decay must be finite and >= 0, got -1.0; use 0 to turn it off", "2"),
    ("flag-hidden-0", "--hidden 0", "CLI",
     ERR + "n_hidden must be an integer >= 1, got 0", "2"),
    ("flag-max-iter", "--max-iter -1", "CLI",
     ERR + "max_iter must be an integer >= 0, got -1",
     "2"),
    ("flag-strategy", "--strategy fast", "CLI",
     USAGE + "argument --strategy: invalid choice: 'fast' (choose from …)", "2"),
    ("flag-dtype", "--dtype float16", "CLI",
     USAGE + "argument --dtype: invalid choice: 'float16' (choose from …)", "2"),
    ("flag-rho-text", "--rho abc", "CLI", USAGE + "argument --rho: invalid float value: 'abc'",
     "2"),
    ("flag-checkpoint-every-0", "--checkpoint-every 0", "CLI",
     USAGE + "argument --checkpoint-every: must be an integer >= 1, got 0", "2"),
    ("flag-chunk-rows-0", "--chunk-rows 0", "CLI",
     USAGE + "argument --chunk-rows: must be an integer >= 1, got 0", "2"),
    ("flag-no-out", "no --out", "CLI", USAGE + "the following arguments are required: --out",
     "2"),
    ("api-dtype", "dtype='float16', then fit", "API",
     "dtype must be 'float32' or 'float64', got 'float16'", "ParameterError"),
    ("api-optimizer", "optimizer='adam', then fit", "API",
     "unknown optimizer 'adam'; choose one of lbfgs, gd", "ParameterError"),
    ("api-checkpoint-every", "fit(checkpoint_every=5) without checkpoint", "API",
     "checkpoint_every and resume need a checkpoint path: pass checkpoint='run.ckpt'",
     "ParameterError"),
    # ---- model files
    ("model-missing", "load a model path that does not exist", "API",
     "no model at 'nope.zarr': the path does not exist (check the path)", "DataError"),
    ("model-not-a-model", "load a data store as a model", "API",
     "'good.zarr' is not a streamae model (a Zarr array is there, not a group); give the "
     "model folder that `SparseAutoencoder.save` (or `streamae train --out`) wrote",
     "DataError"),
    ("model-damaged", "load a model whose W1 is gone", "API",
     "model 'model.zarr' is damaged: cannot read its weights W1 (no Zarr metadata there); "
     "retrain or restore it", "DataError"),
    ("model-version", "load a model of format version 2", "API",
     "model 'model.zarr' has format version 2, this streamae reads version 1; install the "
     "streamae version that wrote it", "DataError"),
    # ---- checkpoints
    ("ckpt-truncated", "--resume from a truncated checkpoint", "CLI",
     ERR + "checkpoint 'model.zarr/checkpoint.npz' is damaged or truncated; restore a good "
     "copy, or "
     + START_OVER, "2"),
    ("ckpt-not-a-checkpoint", "--resume from a file that is not a checkpoint", "CLI",
     ERR + "'model.zarr/checkpoint.npz' is not a streamae checkpoint (not an .npz file); give "
     "the file "
     "that --checkpoint named, or the default OUT/checkpoint.npz", "2"),
    ("ckpt-version", "--resume from a checkpoint of format version 2", "CLI",
     ERR + f"checkpoint 'model.zarr/checkpoint.npz' has format version 2, this streamae "
     f"({streamae.__version__}) reads version 1; finish that run with the streamae version "
     "that wrote it, or " + START_OVER, "2"),
    ("ckpt-other-shape", "--resume against data of another shape", "CLI",
     ERR + "checkpoint 'model.zarr/checkpoint.npz' was written for other data: path … now …; shape "
     "(40, 4) now (60, 4); store metadata checksum … now …; resume with the same data, or "
     + START_OVER, "2"),
    ("ckpt-other-store", "--resume against the same values in another store layout", "CLI",
     ERR + "checkpoint 'model.zarr/checkpoint.npz' was written for other data: chunks (10, 4) now "
     "(20, 4); store metadata checksum … now …; resume with the same data, or " + START_OVER,
     "2"),
    ("ckpt-other-hyper", "--resume with another --rho", "CLI",
     ERR + "checkpoint 'model.zarr/checkpoint.npz' was written with other hyperparameters: "
     "rho 0.01 "
     "now 0.05; resume with the same options, or " + START_OVER, "2"),
    ("ckpt-other-run", "--resume with another --strategy", "CLI",
     ERR + "checkpoint 'model.zarr/checkpoint.npz' was written with other run settings: strategy "
     "one-pass now two-pass; resume with the same options, or " + START_OVER, "2"),
    ("ckpt-exists", "a new run where a checkpoint exists (no --resume)", "CLI",
     ERR + "checkpoint 'model.zarr/checkpoint.npz' already exists (its run has "
     "not written its model); continue that run with --resume, or start over with "
     "--overwrite", "2"),
    ("api-ckpt-other-hidden", "fit(resume=True) with another n_hidden", "API",
     "checkpoint 'model.zarr/checkpoint.npz' was written with other hyperparameters: "
     "n_hidden 3 now 4; "
     "resume with the same options, or " + API_START_OVER, "CheckpointError"),
    ("ckpt-disk-full", "disk full while writing a checkpoint", "CLI",
     ERR + "cannot write checkpoint 'model.zarr/checkpoint.npz' (No space left on device); no "
     "checkpoint was written", "2"),
    # ---- outputs
    ("out-exists", "--out that exists, without --overwrite", "CLI",
     ERR + "model 'model.zarr' already exists; choose another path or pass --overwrite "
     "to replace it", "2"),
    ("out-finished-run", "--out holding a finished run's model, without --resume", "CLI",
     ERR + "model 'model.zarr' already exists (a finished run: extend it with --resume and a "
     "larger --max-iter, or start over with --overwrite)", "2"),
    ("out-permission", "--out in a directory without write permission", "CLI",
     ERR + "cannot write model 'locked/model.zarr' (Permission denied on 'locked'); nothing "
     "was written", "2"),
    ("out-parent-file", "--out below a regular file", "CLI",
     ERR + "cannot write model 'file/model.zarr' ('file' is not a directory); nothing was "
     "written", "2"),
    ("out-disk-full", "disk full while replacing a model (--overwrite)", "CLI",
     ERR + "cannot write model 'model.zarr' (No space left on device); the existing model is "
     "unchanged", "2"),
    ("api-save-exists", "save() to an existing path", "API",
     "model 'model.zarr' already exists; choose another path or pass `overwrite=True` "
     "to replace it", "OutputExistsError"),
]


# ------------------------------------------------------------------ helpers

def _array(path, values, chunks=None, compressed=True):
    values = np.asarray(values)
    with warnings.catch_warnings():  # Zarr warns that strings have no v3 specification yet
        warnings.simplefilter("ignore", zarr.errors.UnstableSpecificationWarning)
        z = zarr.create_array(path, shape=values.shape, dtype=values.dtype,
                              chunks=chunks or values.shape,
                              **({} if compressed else {"compressors": None}))
    z[...] = values
    return path


def _good(path="good.zarr", rows=40, chunk=10, compressed=True):
    X = np.random.default_rng(0).uniform(0.1, 0.9, size=(rows, 4))
    return _array(path, X, (chunk, 4), compressed)


def _damage(path, chunk, cut):
    """Cut the file of ``chunk`` to ``cut`` bytes, or (``cut=None``) spoil its first bytes."""
    file = os.path.join(path, *chunk.split("/"))
    with open(file, "rb") as f:
        data = f.read()
    with open(file, "wb") as f:
        f.write(data[:cut] if cut is not None else b"\xff" * 8 + data[8:])
    return path


def _with(rows, value, name):
    X = np.full((30, 4), 0.5)
    for r, v in zip(rows, value, strict=True):
        X[r, 1] = v
    return _array(name, X, (10, 4))


def _checkpoint(*extra):
    """A finished run on good.zarr; its folder model.zarr keeps only the checkpoint."""
    _good()
    assert main(["train", "good.zarr", "--out", "model.zarr", *BASE, "--checkpoint-every", "1",
                 *extra]) == 0
    for name in os.listdir("model.zarr"):
        if name != "checkpoint.npz":
            shutil.rmtree(os.path.join("model.zarr", name), ignore_errors=True)
    os.remove(os.path.join("model.zarr", "zarr.json"))
    return "model.zarr/checkpoint.npz"


def _rewrite_meta(path, **changes):
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays["meta"].tobytes())
    meta.update(changes)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _model():
    _good()
    assert main(["train", "good.zarr", "--out", "model.zarr", *BASE]) == 0
    return "model.zarr"


def _fail_with(code):
    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))
    return fail


def _disk_full_after_one_array(target, params, attrs, storage_options=None):
    group = zarr.open_group(target, mode="w")  # part of the model is written...
    group.create_array("W1", shape=params["W1"].shape, dtype="f8")[...] = params["W1"]
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.path.join(target, "b1"))


def _fsync_full_for(prefix):
    real = os.fsync

    def fsync(fd):
        if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(prefix):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)
    return fsync


def _cli(argv):
    return lambda mp: main(argv)


SETUP = {
    "data-missing": lambda mp: main(["train", "nope.zarr", "--out", "model.zarr", *BASE]),
    "data-nan": lambda mp: main(["train", _with([5], [np.nan], "nan.zarr"), "--out", "m.zarr",
                                 *BASE]),
    "data-inf": lambda mp: main(["train", _with([12], [np.inf], "inf.zarr"), "--out", "m.zarr",
                                 *BASE]),
    "data-out-of-range": lambda mp: main(["train", _with([21, 22], [1.5, -0.5], "range.zarr"),
                                          "--out", "m.zarr", *BASE]),
    "data-1d": lambda mp: main(["train", _array("vector.zarr", np.full(30, 0.5)), "--out",
                                "m.zarr", *BASE]),
    "data-3d": lambda mp: main(["train", _array("cube.zarr", np.full((30, 2, 2), 0.5)),
                                "--out", "m.zarr", *BASE]),
    "data-empty": lambda mp: main(["train", _array("empty.zarr", np.zeros((0, 4)), (1, 4)),
                                   "--out", "m.zarr", *BASE]),
    "data-strings": lambda mp: main([
        "train", _array("strings.zarr", np.array([["a", "b"], ["c", "d"]])), "--out", "m.zarr",
        *BASE]),
    "data-group": lambda mp: (zarr.open_group("group.zarr", mode="w"),
                              main(["train", "group.zarr", "--out", "m.zarr", *BASE]))[1],
    "data-plain-folder": lambda mp: (os.mkdir("folder"),
                                     main(["train", "folder", "--out", "m.zarr", *BASE]))[1],
    "data-npy": lambda mp: (np.save("x.npy", np.full((10, 4), 0.5)),
                            main(["train", "x.npy", "--out", "m.zarr", *BASE]))[1],
    "data-csv": lambda mp: (np.savetxt("x.csv", np.full((10, 4), 0.5), delimiter=","),
                            main(["train", "x.csv", "--out", "m.zarr", *BASE]))[1],
    "data-uint8": lambda mp: main([
        "train", _array("pixels.zarr", np.linspace(2, 255, 120).astype(np.uint8).reshape(30, 4),
                        (10, 4)), "--out", "m.zarr", *BASE]),
    "data-chunk-cut-short": lambda mp: main([
        "train", _damage(_good("cut.zarr", compressed=False), "c/2/0", cut=100), "--out",
        "m.zarr", *BASE]),
    "data-chunk-corrupt": lambda mp: main([
        "train", _damage(_good("corrupt.zarr"), "c/1/0", cut=None), "--out", "m.zarr", *BASE]),
    "data-complex": lambda mp: main(["train", _array("complex.zarr", np.full((10, 4), 0.5 + 0j)),
                                     "--out", "m.zarr", *BASE]),
    "api-data-nan": lambda mp: SparseAutoencoder(n_hidden=3, max_iter=2).fit(
        np.where(np.arange(120).reshape(30, 4) == 13, np.nan, 0.5)),
    "api-width": lambda mp: SparseAutoencoder.from_weights(
        np.zeros((3, 4)), np.zeros(3), np.zeros((4, 3)), np.zeros(4)).transform(
        np.full((10, 5), 0.5)),
    "api-not-fitted": lambda mp: SparseAutoencoder().transform(np.full((10, 4), 0.5)),
    "flag-rho-0": lambda mp: main(["train", _good(), "--out", "m.zarr", *BASE, "--rho", "0"]),
    "flag-rho-1.5": lambda mp: main(["train", _good(), "--out", "m.zarr", *BASE, "--rho", "1.5"]),
    "flag-beta": lambda mp: main(["train", _good(), "--out", "m.zarr", *BASE, "--beta", "-1"]),
    "flag-weight-decay": lambda mp: main(["train", _good(), "--out", "m.zarr", *BASE,
                                          "--weight-decay", "-1"]),
    "flag-hidden-0": lambda mp: main(["train", _good(), "--out", "m.zarr", *BASE,
                                      "--hidden", "0"]),
    "flag-max-iter": lambda mp: main(["train", _good(), "--out", "m.zarr", *BASE,
                                      "--max-iter", "-1"]),
    "flag-strategy": _cli(["train", "good.zarr", "--out", "m.zarr", "--strategy", "fast"]),
    "flag-dtype": _cli(["train", "good.zarr", "--out", "m.zarr", "--dtype", "float16"]),
    "flag-rho-text": _cli(["train", "good.zarr", "--out", "m.zarr", "--rho", "abc"]),
    "flag-checkpoint-every-0": _cli(["train", "good.zarr", "--out", "m.zarr",
                                     "--checkpoint-every", "0"]),
    "flag-chunk-rows-0": _cli(["train", "good.zarr", "--out", "m.zarr", "--chunk-rows", "0"]),
    "flag-no-out": _cli(["train", "good.zarr"]),
    "api-dtype": lambda mp: SparseAutoencoder(dtype="float16").fit(np.full((10, 4), 0.5)),
    "api-optimizer": lambda mp: SparseAutoencoder(optimizer="adam").fit(np.full((10, 4), 0.5)),
    "api-checkpoint-every": lambda mp: SparseAutoencoder().fit(np.full((10, 4), 0.5),
                                                               checkpoint_every=5),
    "model-missing": lambda mp: SparseAutoencoder.load("nope.zarr"),
    "model-not-a-model": lambda mp: SparseAutoencoder.load(_good()),
    "model-damaged": lambda mp: (os.remove(os.path.join(_model(), "W1", "zarr.json")),
                                 SparseAutoencoder.load("model.zarr"))[1],
    "model-version": lambda mp: (zarr.open_group(_model(), mode="r+").attrs.update(
        {"format_version": 2}), SparseAutoencoder.load("model.zarr"))[1],
    "ckpt-truncated": lambda mp: (_truncate(_checkpoint()),
                                  main(["train", "good.zarr", "--out", "model.zarr", *BASE,
                                        "--resume"]))[1],
    "ckpt-not-a-checkpoint": lambda mp: (os.mkdir("model.zarr"),
                                         _text("model.zarr/checkpoint.npz"), _good(),
                                         main(["train", "good.zarr", "--out", "model.zarr",
                                               *BASE, "--resume"]))[3],
    "ckpt-version": lambda mp: (_rewrite_meta(_checkpoint(), format_version=2),
                                main(["train", "good.zarr", "--out", "model.zarr", *BASE,
                                      "--resume"]))[1],
    "ckpt-other-shape": lambda mp: (_checkpoint(), _good("other.zarr", rows=60),
                                    main(["train", "other.zarr", "--out", "model.zarr", *BASE,
                                          "--checkpoint", "model.zarr/checkpoint.npz",
                                          "--resume"]))[2],
    "ckpt-other-store": lambda mp: (_checkpoint(), shutil.rmtree("good.zarr"),
                                    _good(chunk=20), main(["train", "good.zarr", "--out",
                                                           "model.zarr", *BASE, "--resume"]))[3],
    "ckpt-other-hyper": lambda mp: (_checkpoint(),
                                    main(["train", "good.zarr", "--out", "model.zarr", *BASE,
                                          "--resume", "--rho", "0.05"]))[1],
    "ckpt-other-run": lambda mp: (_checkpoint(),
                                  main(["train", "good.zarr", "--out", "model.zarr", *BASE,
                                        "--resume", "--strategy", "two-pass"]))[1],
    "ckpt-exists": lambda mp: (_checkpoint(),
                               main(["train", "good.zarr", "--out", "model.zarr", *BASE]))[1],
    "api-ckpt-other-hidden": lambda mp: (_checkpoint(), SparseAutoencoder(n_hidden=4).fit(
        "good.zarr", checkpoint="model.zarr/checkpoint.npz", resume=True))[1],
    "ckpt-disk-full": lambda mp: (_good(), mp.setattr(os, "fsync",
                                                      _fsync_full_for(".checkpoint.npz.tmp-")),
                                  main(["train", "good.zarr", "--out", "model.zarr", *BASE,
                                        "--checkpoint-every", "1"]))[2],
    "out-exists": lambda mp: (_model(), os.remove("model.zarr/checkpoint.npz"),
                              main(["train", "good.zarr", "--out", "model.zarr", *BASE]))[2],
    "out-finished-run": lambda mp: (_model(), main(["train", "good.zarr", "--out",
                                                    "model.zarr", *BASE]))[1],
    "out-permission": lambda mp: (_good(), _lock("locked", mp),
                                  main(["train", "good.zarr", "--out", "locked/model.zarr",
                                        *BASE]))[2],
    "out-parent-file": lambda mp: (_good(), _text("file"),
                                   main(["train", "good.zarr", "--out", "file/model.zarr",
                                         *BASE]))[2],
    "out-disk-full": lambda mp: (_model(), _snapshot("model.zarr"),
                                 mp.setattr(_store, "_write_group", _disk_full_after_one_array),
                                 main(["train", "good.zarr", "--out", "model.zarr", *BASE,
                                       "--overwrite", "--seed", "1"]))[3],
    "api-save-exists": lambda mp: SparseAutoencoder.load(_model()).save("model.zarr"),
}

AFTER = {
    # what must still hold after the error
    # (the run over it started afresh: its checkpoint is the new run's)
    "out-disk-full": lambda: _without_checkpoint(_snapshot("model.zarr"))
    == _without_checkpoint(SNAPSHOTS["model.zarr"])
    and not [p for p in os.listdir(".") if ".tmp-" in p],
    "ckpt-disk-full": lambda: not os.path.exists("model.zarr")
    and not [p for p in os.listdir(".") if ".tmp-" in p],
    "ckpt-truncated": lambda: os.path.getsize("model.zarr/checkpoint.npz") > 0,
}
SNAPSHOTS = {}


def _snapshot(path):
    files = {}
    for root, _, names in os.walk(path):
        for name in names:
            with open(os.path.join(root, name), "rb") as f:
                files[os.path.relpath(os.path.join(root, name), path)] = f.read()
    SNAPSHOTS.setdefault(path, files)
    return files


def _without_checkpoint(files):
    return {k: v for k, v in files.items() if k != "checkpoint.npz"}


def _truncate(path):
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size // 2)


def _text(path):
    with open(path, "w") as f:
        f.write("not a checkpoint\n")


def _lock(path, mp):
    os.mkdir(path)
    if os.geteuid() == 0:  # root ignores permission bits: make the check see a locked dir
        real = os.access
        mp.setattr(os, "access", lambda p, mode, **kw: False if os.path.normpath(p) == path
                   else real(p, mode, **kw))
    else:
        os.chmod(path, 0o555)  # made writable again at the end of the test


def _pattern(message):
    return "^" + ".*".join(re.escape(part) for part in message.split("…")) + "$"


# ------------------------------------------------------------------ tests

def test_table_has_at_least_20_rows_and_unique_ids():
    assert len(ROWS) >= 20
    assert len({r[0] for r in ROWS}) == len(ROWS) == len(SETUP)


def _doc_rows():
    rows = []
    with open(DOC, encoding="utf-8") as f:
        for line in f:
            if not line.startswith("| `") or line.startswith("| ---"):
                continue
            cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
            ident, what, interface, message, status = cells
            rows.append((ident.strip("`"), what, interface, message[3:-3], status.strip("`")))
    return rows


def test_docs_table_matches_rows():
    assert _doc_rows() == ROWS


@pytest.mark.parametrize("row", ROWS, ids=[r[0] for r in ROWS])
def test_bad_input(row, tmp_path, monkeypatch, capsys):
    ident, _, interface, message, status = row
    monkeypatch.chdir(tmp_path)
    SNAPSHOTS.clear()
    try:
        if interface == "CLI":
            try:
                code = SETUP[ident](monkeypatch)
            except SystemExit as exc:  # argparse
                code = exc.code
            err = capsys.readouterr().err.strip().splitlines()
            assert_one_line(row, code, err)
        else:
            with pytest.raises(Exception) as info:  # noqa: B017 - the class is checked below
                SETUP[ident](monkeypatch)
            assert type(info.value).__name__ == status
            assert re.match(_pattern(message), str(info.value)), str(info.value)
            assert isinstance(info.value, streamae.StreamaeError)
        if ident in AFTER:
            assert AFTER[ident](), "the earlier output was not left intact"
    finally:
        if os.path.isdir("locked"):
            os.chmod("locked", 0o755)


# ------------------------------------------------------------------ real disk-full

def test_real_disk_full_keeps_the_previous_model(tmp_path):
    """A tiny tmpfs: the model write really runs out of space (needs mount rights)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        small = SparseAutoencoder.from_weights(np.zeros((2, 3)), np.zeros(2), np.zeros((3, 2)),
                                               np.zeros(3))
        small.save(mnt / "model.zarr")
        before = _snapshot(str(mnt / "model.zarr"))
        big = SparseAutoencoder.from_weights(*(np.random.default_rng(0).uniform(size=s) for s in
                                               [(64, 400), (64,), (400, 64), (400,)]))
        with pytest.raises(OutputWriteError, match=r"\(No space left on device\); the "
                           "existing model is unchanged"):
            big.save(mnt / "model.zarr", overwrite=True)
        SNAPSHOTS.clear()
        assert _snapshot(str(mnt / "model.zarr")) == before
        assert "model.zarr" in os.listdir(mnt)
        assert not [p for p in os.listdir(mnt) if ".tmp-" in p]
        assert SparseAutoencoder.load(mnt / "model.zarr").W1_.shape == (2, 3)
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_error_classes():
    assert issubclass(CheckpointError, streamae.StreamaeError)
    assert issubclass(OutputWriteError, streamae.StreamaeError)
    assert issubclass(OutputWriteError, OSError)
    assert issubclass(TrainingInterrupted, KeyboardInterrupt)


# ------------------------------------------------------------------ one line, and nothing after it

#: Runs one row in a fresh interpreter, as the `streamae` command would, so that
#: whatever the process prints up to its very end is seen (messages at
#: interpreter exit: event loops, coroutines, threads, worker processes).
#: Extra arguments are added to every `streamae train` of the row.
_DRIVER = """
import os, sys
sys.path.insert(0, {tests!r})
import pytest
import test_bad_inputs as rows
from streamae import cli

ident, extra = sys.argv[1], sys.argv[2:]
rows.main = lambda argv: cli.main(argv + extra if argv[:1] == ["train"] else argv)
code = rows.SETUP[ident](pytest.MonkeyPatch())
sys.exit(code)
"""

CLI_ROWS = [r for r in ROWS if r[2] == "CLI"]
#: Rows whose error comes from the evaluation or after it: the scheduler matters.
DURING_FIT = ["data-nan", "data-inf", "data-out-of-range", "ckpt-disk-full", "out-disk-full"]
SCHEDULERS = {"synchronous": ["--scheduler", "synchronous"],
              "processes": ["--scheduler", "processes", "--workers", "2"],
              "local-cluster": ["--workers", "2"]}


def run_row(ident, tmp_path, *extra):
    """Exit status and stderr lines of the row run as its own process."""
    driver = _DRIVER.format(tests=os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "COLUMNS": "100"}
    done = subprocess.run([sys.executable, "-c", driver, ident, *extra], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, env=env)
    return done.returncode, done.stderr.splitlines()


def assert_one_line(row, code, err):
    """The row's message is the only line on stderr (after argparse's usage)."""
    ident, _, _, message, status = row
    assert str(code) == status, err
    assert err and re.match(_pattern(message), err[-1]), err
    before = err[:-1]
    if message.startswith(USAGE):
        assert before and before[0].startswith("usage: streamae train "), err
        assert all(line.startswith(" ") for line in before[1:]), err
    else:
        assert not before, err


#: In the default suite: a row of each kind of failure (a library's error while
#: opening the data, a kernel's, a damaged file, argparse, a failed write).
QUICK = ["data-group", "data-nan", "ckpt-truncated", "flag-strategy", "out-disk-full"]


@pytest.mark.parametrize("row", [pytest.param(r, marks=() if r[0] in QUICK else pytest.mark.slow)
                                 for r in CLI_ROWS], ids=[r[0] for r in CLI_ROWS])
def test_cli_row_prints_one_line_and_nothing_after(row, tmp_path):
    try:
        code, err = run_row(row[0], tmp_path)
    finally:
        if os.path.isdir(tmp_path / "locked"):
            os.chmod(tmp_path / "locked", 0o755)
    assert_one_line(row, code, err)


@pytest.mark.slow
@pytest.mark.parametrize("scheduler", list(SCHEDULERS))
@pytest.mark.parametrize("ident", DURING_FIT)
def test_fit_errors_print_one_line_on_every_scheduler(ident, scheduler, tmp_path):
    (row,) = [r for r in ROWS if r[0] == ident]
    code, err = run_row(ident, tmp_path, *SCHEDULERS[scheduler])
    assert_one_line(row, code, err)


@pytest.mark.parametrize("ident", ["data-nan"])
def test_a_fit_error_on_a_local_cluster_prints_one_line(ident, tmp_path):
    (row,) = [r for r in ROWS if r[0] == ident]
    code, err = run_row(ident, tmp_path, *SCHEDULERS["local-cluster"])
    assert_one_line(row, code, err)
