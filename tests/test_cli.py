"""The ``streamae`` command: in-process through ``streamae.cli.main`` and as a
real subprocess (``python -m streamae.cli`` and the installed entry point)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr
from numpy.testing import assert_array_equal
from PIL import Image

import streamae
from streamae import STRATEGIES, SparseAutoencoder
from streamae import _checkpoint as C
from streamae.cli import main


@pytest.fixture
def store(rng, write_zarr):
    """A clean training store: 120 x 16 in [0.1, 0.9], chunks of 50 rows."""
    return write_zarr(rng.uniform(0.1, 0.9, size=(120, 16)), 50, name="data.zarr")


@pytest.fixture
def nan_store(rng, write_zarr):
    X = rng.uniform(0.1, 0.9, size=(120, 16))
    X[77, 4] = np.nan
    return write_zarr(X, 50, name="nan.zarr")


def train_args(data, out, *extra):
    return ["train", str(data), "--out", str(out), "--hidden", "4", "--max-iter", "3",
            "--dtype", "float64", "--quiet", *extra]


def tree(path):
    """Every file under ``path`` with its bytes (to prove nothing changed)."""
    path = Path(path)
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file()}


def same_bits(a, b):
    return all(getattr(a, k).tobytes() == getattr(b, k).tobytes()
               for k in ("W1_", "b1_", "W2_", "b2_"))


def assert_one_line_error(rc, err, *words):
    assert rc == 2
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("streamae: error: ")
    for word in words:
        assert word in lines[0], (word, lines[0])


# ----------------------------------------------------------------- train (in-process)

def test_train_writes_a_loadable_model(store, tmp_path, capsys):
    out = tmp_path / "model.zarr"
    rc = main(train_args(store, out, "--strategy", "two-pass", "--seed", "5"))
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert captured.err == ""  # --quiet: no progress bar, no warnings
    assert "model written to" in captured.out and str(out) in captured.out
    model = SparseAutoencoder.load(out)
    assert model.n_hidden == 4 and model.n_visible_ == 16
    assert model.dtype == "float64" and model.random_state == 5 and model.n_iter_ == 3
    assert model.history_[-1]["cost"] < model.history_[0]["cost"]
    # The CLI trains exactly what the library trains.
    lib = SparseAutoencoder(n_hidden=4, dtype="float64", random_state=5, strategy="two-pass",
                            max_iter=3).fit(store)
    assert_array_equal(model.W1_, lib.W1_, strict=True)


def test_train_missing_path(tmp_path, capsys):
    out = tmp_path / "model.zarr"
    rc = main(train_args(tmp_path / "nope.zarr", out))
    assert_one_line_error(rc, capsys.readouterr().err, "nope.zarr", "does not exist")
    assert not out.exists()


def test_train_nan_data(nan_store, tmp_path, capsys):
    out = tmp_path / "model.zarr"
    rc = main(train_args(nan_store, out))
    assert_one_line_error(rc, capsys.readouterr().err, "nan.zarr", "chunk 1 (rows 50-99)",
                          "NaN", "rows 77")
    assert not out.exists()


@pytest.mark.parametrize("option, value, words", [
    ("--rho", "1.5", ["rho", "(0, 1)", "1.5"]),
    ("--beta", "-2", ["beta", ">= 0"]),
    ("--weight-decay", "-1", ["weight_decay", ">= 0"]),
    ("--hidden", "0", ["n_hidden", ">= 1"]),
])
def test_train_bad_hyperparameter(option, value, words, store, tmp_path, capsys):
    out = tmp_path / "model.zarr"
    rc = main(train_args(store, out, option, value))
    assert_one_line_error(rc, capsys.readouterr().err, *words)
    assert not out.exists()


def test_train_refuses_existing_output_and_overwrite_replaces(store, tmp_path, capsys):
    out = tmp_path / "model.zarr"
    assert main(train_args(store, out, "--seed", "1")) == 0
    before = tree(out)
    first = SparseAutoencoder.load(out)
    capsys.readouterr()

    rc = main(train_args(store, out, "--seed", "2"))
    assert_one_line_error(rc, capsys.readouterr().err, str(out), "already exists",
                          "--overwrite")
    assert tree(out) == before  # untouched, byte for byte

    assert main(train_args(store, out, "--seed", "2", "--overwrite")) == 0
    second = SparseAutoencoder.load(out)
    assert second.random_state == 2
    assert not np.array_equal(second.W1_, first.W1_)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".model.zarr")] == []


def test_argparse_errors_exit_2(store, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(train_args(store, tmp_path / "m.zarr", "--strategy", "three-pass"))
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "three-pass" in err


# ----------------------------------------------------------------- gradcheck

def test_gradcheck_passes_and_names_every_strategy(capsys):
    rc = main(["gradcheck", "--rows", "15", "--visible", "4", "--hidden", "2",
               "--chunk-rows", "4"])
    out = capsys.readouterr().out
    assert rc == 0, out
    for strategy in STRATEGIES:
        [line] = [ln for ln in out.splitlines() if ln.split()[:1] == [strategy]]
        diff = float(line.split()[1])
        assert diff < 1e-9 and line.endswith("ok")


def test_gradcheck_fails_with_an_impossible_tolerance(capsys):
    rc = main(["gradcheck", "--rows", "6", "--visible", "2", "--hidden", "1", "--chunk-rows",
               "4", "--tol", "1e-30"])
    out = capsys.readouterr().out
    assert rc == 1 and out.count("FAIL") == len(STRATEGIES)


# ----------------------------------------------------------------- demo

def test_demo_writes_outputs_and_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "demo"
    rc = main(["demo", "--out", str(out), "--max-iter", "5", "--quiet"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert {p.name for p in out.iterdir()} >= {"filters.png", "model.zarr", "patches.zarr"}

    with Image.open(out / "filters.png") as im:
        assert im.format == "PNG" and im.size[0] > 0
    model = SparseAutoencoder.load(out / "model.zarr")
    assert (model.n_hidden, model.n_visible_, model.rho) == (25, 64, 0.01)
    assert model.n_iter_ == 5
    patches = zarr.open_array(str(out / "patches.zarr"), mode="r")
    assert patches.shape == (10000, 64)
    values = patches[...]
    assert values.min() >= 0.1 - 1e-6 and values.max() <= 0.9 + 1e-6

    before = tree(out)
    rc = main(["demo", "--out", str(out), "--max-iter", "5", "--quiet"])
    assert_one_line_error(rc, capsys.readouterr().err, "already exists", "--overwrite")
    assert tree(out) == before

    rc = main(["demo", "--out", str(out), "--max-iter", "2", "--quiet", "--overwrite"])
    assert rc == 0
    assert SparseAutoencoder.load(out / "model.zarr").n_iter_ == 2


# ----------------------------------------------------------------- real processes

def _run(argv, cwd):
    # The child imports the same streamae as this process (the checkout under
    # test, whatever the install mode).
    env = dict(os.environ)
    root = str(Path(streamae.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_subprocess_error_is_one_line_without_traceback(nan_store, tmp_path):
    bad = _run([sys.executable, "-m", "streamae.cli", *train_args(nan_store, tmp_path / "b")],
               tmp_path)
    assert_one_line_error(bad.returncode, bad.stderr, "nan.zarr", "chunk 1 (rows 50-99)",
                          "NaN", "rows 77")
    assert bad.stdout == ""
    assert not (tmp_path / "b").exists()


def test_entry_point_trains(store, tmp_path):
    script = Path(sys.executable).with_name("streamae")
    if not script.exists():
        pytest.skip(f"no 'streamae' entry point beside {sys.executable} (package not installed)")
    out = tmp_path / "model.zarr"
    ok = _run([str(script), *train_args(store, out)], tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert ok.stderr == ""  # --quiet: nothing on stderr, no warnings either
    assert "model written to" in ok.stdout
    assert SparseAutoencoder.load(out).n_iter_ == 3


# ----------------------------------------------------------------- checkpoint life cycle

def _train(data, out, max_iter, *extra):
    return ["train", str(data), "--out", str(out), "--hidden", "4", "--max-iter",
            str(max_iter), "--dtype", "float64", "--quiet", *extra]


def test_resume_after_a_finished_run_has_nothing_to_do(store, tmp_path, capsys):
    out = tmp_path / "model.zarr"
    assert main(_train(store, out, 3)) == 0  # no --checkpoint-every: written at the end
    assert C.read(C.default_path(out)).state.iteration == 3
    before = tree(out)
    capsys.readouterr()
    assert main(_train(store, out, 3, "--resume")) == 0
    assert capsys.readouterr().out == (
        f"the run in '{C.default_path(out)}' had already finished (3 iterations) and its "
        "model is at "
        f"{out}; nothing to do\n")
    assert tree(out) == before  # untouched, byte for byte


def test_resume_with_a_larger_max_iter_extends_a_finished_run(store, tmp_path, capsys):
    reference = tmp_path / "six.zarr"
    assert main(_train(store, reference, 6)) == 0
    out = tmp_path / "model.zarr"
    assert main(_train(store, out, 3)) == 0
    capsys.readouterr()
    assert main(_train(store, out, 6, "--resume")) == 0
    assert "resumed from iteration 3" in capsys.readouterr().out
    extended, full = SparseAutoencoder.load(out), SparseAutoencoder.load(reference)
    for k in ("W1_", "b1_", "W2_", "b2_"):
        assert_array_equal(getattr(extended, k), getattr(full, k), strict=True)
    assert [r["cost"] for r in extended.history_] == [r["cost"] for r in full.history_]
    assert C.read(C.default_path(out)).state.iteration == 6


def test_resume_refuses_an_output_holding_other_weights(store, tmp_path, capsys):
    out = tmp_path / "model.zarr"
    assert main(_train(store, out, 3)) == 0
    other = tmp_path / "other.zarr"
    assert main(_train(store, other, 3, "--seed", "9")) == 0
    os.replace(C.default_path(out), tmp_path / "kept.npz")
    shutil.rmtree(out)
    shutil.copytree(other, out)  # the other model, with out's own checkpoint
    os.replace(tmp_path / "kept.npz", C.default_path(out))
    before = tree(out)
    capsys.readouterr()
    assert main(_train(store, out, 6, "--resume")) == 2
    assert capsys.readouterr().err == (
        f"streamae: error: model '{out}' already exists and does not hold the weights of the "
        f"checkpoint '{C.default_path(out)}'; choose another path or pass --overwrite to "
        "replace it\n")
    assert tree(out) == before


def test_deleting_the_model_and_training_again_works(store, tmp_path, capsys):
    """The checkpoint is inside the model's folder: `rm -r M` removes both."""
    out = tmp_path / "model.zarr"
    assert main(_train(store, out, 3)) == 0
    assert os.path.isfile(os.path.join(out, "checkpoint.npz"))
    assert sorted(os.listdir(tmp_path)) == ["data.zarr", "model.metrics.jsonl", "model.zarr"]
    shutil.rmtree(out)
    assert main(_train(store, out, 3)) == 0
    assert SparseAutoencoder.load(out).n_iter_ == 3


def test_training_over_a_finished_model_says_how_to_extend_it(store, tmp_path, capsys):
    out = tmp_path / "model.zarr"
    assert main(_train(store, out, 3)) == 0
    before = tree(out)
    capsys.readouterr()
    assert main(_train(store, out, 3)) == 2
    assert capsys.readouterr().err == (
        f"streamae: error: model '{out}' already exists (a finished run: extend it with "
        "--resume and a larger --max-iter, or start over with --overwrite)\n")
    assert tree(out) == before


def test_an_unfinished_run_is_continued_not_replaced(store, tmp_path, capsys):
    """A folder holding only a checkpoint (a run interrupted before its model was
    written) is refused without --resume, and --resume continues it exactly."""
    reference = tmp_path / "ref.zarr"
    assert main(_train(store, reference, 5)) == 0
    out = tmp_path / "model.zarr"
    assert main(_train(store, out, 2)) == 0
    for name in os.listdir(out):  # keep only the checkpoint of iteration 2
        if name != "checkpoint.npz":
            path = os.path.join(out, name)
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    capsys.readouterr()
    assert main(_train(store, out, 5)) == 2
    assert capsys.readouterr().err == (
        f"streamae: error: checkpoint '{C.default_path(out)}' already exists (its run has "
        "not written its model); continue that run with --resume, or start over with "
        "--overwrite\n")
    assert main(_train(store, out, 5, "--resume")) == 0
    assert same_bits(SparseAutoencoder.load(out), SparseAutoencoder.load(reference))


def test_a_checkpoint_beside_the_model_is_still_continued(store, tmp_path, capsys):
    """Earlier versions kept the checkpoint at OUT.ckpt: --resume continues it."""
    reference = tmp_path / "ref.zarr"
    assert main(_train(store, reference, 5)) == 0
    out = tmp_path / "model.zarr"
    assert main(_train(store, out, 2)) == 0
    os.rename(C.default_path(out), f"{out}.ckpt")
    shutil.rmtree(out)
    capsys.readouterr()
    assert main(_train(store, out, 2)) == 0  # a fresh run: says the old one is not used
    assert capsys.readouterr().err == (
        f"streamae: '{out}.ckpt' (a checkpoint beside the model, where earlier versions kept "
        f"it) is not used: this run's checkpoint is '{C.default_path(out)}'; to continue "
        "that run instead, add --resume\n")
    shutil.rmtree(out)
    assert main(_train(store, out, 5, "--resume")) == 0
    assert capsys.readouterr().err == (
        f"streamae: continuing the checkpoint '{out}.ckpt' (beside the model, where earlier "
        "versions kept it)\n")
    assert same_bits(SparseAutoencoder.load(out), SparseAutoencoder.load(reference))


def test_summary_says_whether_the_fit_converged(store, tmp_path, capsys):
    assert main(_train(store, tmp_path / "m.zarr", 2)) == 0
    out = capsys.readouterr()
    assert "(reached max_iter=2; not converged: raise --max-iter" in out.out
    assert "ConvergenceWarning" not in out.err


# ----------------------------------------------------------------- --init

def test_init_starts_from_a_saved_model(store, tmp_path, capsys):
    first = tmp_path / "m1.zarr"
    assert main(_train(store, first, 3, "--hidden", "5")) == 0
    m1 = SparseAutoencoder.load(first)
    second = tmp_path / "m2.zarr"
    assert main(["train", str(store), "--out", str(second), "--init", str(first),
                 "--max-iter", "2", "--dtype", "float64", "--quiet"]) == 0
    assert f"started from {first}" in capsys.readouterr().out
    m2 = SparseAutoencoder.load(second)
    assert m2.W1_.shape == (5, 16) and m2.n_iter_ == 2
    assert m2.history_[0]["cost"] == m1.history_[-1]["cost"]  # m1's final weights, re-evaluated
    assert_array_equal(SparseAutoencoder.load(first).W1_, m1.W1_)  # --init is only read


def test_init_refuses_another_hidden_size(store, tmp_path, capsys):
    first = tmp_path / "m1.zarr"
    assert main(_train(store, first, 1, "--hidden", "5")) == 0
    capsys.readouterr()
    assert main(_train(store, tmp_path / "m2.zarr", 1, "--init", str(first))) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--hidden 4 differs from the 5 hidden units" in err


def test_photos_writes_the_sample_photographs_and_refuses_to_overwrite(tmp_path, capsys):
    folder = tmp_path / "photos"
    assert main(["photos", str(folder)]) == 0
    names = sorted(os.listdir(folder))
    assert len(names) == 10 and all(n.endswith(".jpg") for n in names)
    assert capsys.readouterr().out.splitlines()[0] == f"{folder / 'astronaut.jpg'}: 512x512"
    with Image.open(folder / "rocket.jpg") as im:
        assert im.size == (640, 427)
    before = tree(folder)
    assert main(["photos", str(folder)]) == 2
    assert "already exists; choose another folder or pass --overwrite" in \
        capsys.readouterr().err
    assert tree(folder) == before
    assert main(["photos", str(folder), "--overwrite"]) == 0
