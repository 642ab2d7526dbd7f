"""Object stores (issue 4): Zarr data and models at s3:// URLs.

A real S3 API (``moto_server``) runs on 127.0.0.1 in a subprocess, with IAM
authentication on: only the credentials of the user created at start-up are
accepted. s3fs reaches it through ``AWS_ENDPOINT_URL`` (or the
``endpoint_url`` storage option); the credentials come from the environment.
"""

import argparse
import os
import subprocess
import sys

import numpy as np
import pytest
import zarr
from cluster_fixtures import MotoServer, all_exited, cluster_children, make_store, wait_for

from streamae import DataError, OutputExistsError, SparseAutoencoder
from streamae._objective import PARAM_NAMES
from streamae.cli import _storage_option, main, storage_options

pytest.importorskip("s3fs")
pytest.importorskip("moto")

M, N, CHUNK = 2000, 12, 250
MODEL = dict(n_hidden=5, rho=0.1, beta=3.0, weight_decay=1e-3, random_state=0,
             strategy="one-pass", max_iter=5)
URL = "s3://data/x.zarr"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """The server, its credentials in this process's environment, buckets
    ``data`` (holding ``x.zarr``, a copy of a local store) and ``models``."""
    root = tmp_path_factory.mktemp("s3")
    with MotoServer(root / "moto") as server, pytest.MonkeyPatch.context() as mp:
        for key in [k for k in os.environ if k.startswith("AWS_")]:
            mp.delenv(key)
        for key, value in server.env().items():
            mp.setenv(key, value)
        server.create_bucket("data")
        server.create_bucket("models")
        server.require_auth()
        local = make_store(root / "x.zarr", M, N, CHUNK, seed=5)
        src = zarr.open_array(local, mode="r")
        z = zarr.create_array(URL, shape=src.shape, chunks=src.chunks, dtype=src.dtype)
        z[...] = src[...]
        server.local_copy = local
        yield server


def assert_same_model(a, b):
    for k in PARAM_NAMES:
        assert getattr(a, k + "_").tobytes() == getattr(b, k + "_").tobytes(), k


def test_train_from_s3_and_save_to_s3(s3):
    model = SparseAutoencoder(**MODEL).fit(URL)
    local = SparseAutoencoder(**MODEL).fit(s3.local_copy)
    assert_same_model(model, local)  # the store's bytes, read over S3: the same result

    model.save("s3://models/m.zarr")
    back = SparseAutoencoder.load("s3://models/m.zarr")
    assert_same_model(back, model)
    assert back.history_[-1]["cost"] == model.history_[-1]["cost"]
    with pytest.raises(OutputExistsError, match="already exists"):
        model.save("s3://models/m.zarr")
    model.save("s3://models/m.zarr", overwrite=True)

    # Explicit storage options work as well as the environment.
    opts = {"endpoint_url": s3.endpoint, "key": s3.key, "secret": s3.secret}
    cost, _ = model.set_params(run_options={"storage_options": opts}).cost_and_grad(URL)
    assert cost == model.cost_and_grad(s3.local_copy)[0]


def test_cli_trains_on_a_local_cluster_from_and_to_s3(s3, tmp_path, monkeypatch, capsys):
    """`--workers 2`: a LocalCluster whose worker processes read the chunks from
    S3 themselves (credentials from the environment); the model goes to S3."""
    monkeypatch.chdir(tmp_path)  # the default checkpoint path of an s3:// --out
    before = cluster_children()
    status = main(["train", URL, "--out", "s3://models/cli.zarr", "--workers", "2",
                   "--hidden", "5", "--rho", "0.1", "--weight-decay", "1e-3",
                   "--max-iter", "5", "--dtype", "float64",
                   "--storage-option", f"endpoint_url={s3.endpoint}"])
    out, err = capsys.readouterr()
    assert status == 0, err
    assert "model written to s3://models/cli.zarr" in out
    assert "Dask cluster tcp://127.0.0.1:" in err and "dashboard http://127.0.0.1:" in err
    assert s3.secret not in out + err

    model = SparseAutoencoder.load("s3://models/cli.zarr")
    local = SparseAutoencoder(**MODEL, dtype="float64").fit(s3.local_copy)
    assert_same_model(model, local)
    # The cluster's processes are gone.
    spawned = cluster_children() - before
    wait_for(lambda: all_exited(spawned), 30, "the local cluster's processes to exit")


@pytest.mark.parametrize("url, options, words", [
    ("s3://nobucket/x.zarr", {}, "no bucket 'nobucket' for 's3://nobucket/x.zarr'"),
    ("s3://data/missing.zarr", {}, "no Zarr array at 's3://data/missing.zarr'"),
    (URL, {"key": "AKIAWRONGKEY", "secret": "wrong-secret-123"}, f"access denied to '{URL}'"),
], ids=["wrong-bucket", "missing-key", "bad-credentials"])
def test_read_errors_are_one_line(s3, url, options, words):
    with pytest.raises(DataError) as exc:
        SparseAutoencoder(**MODEL, run_options={"storage_options": options or None}).fit(url)
    text = str(exc.value)
    assert words in text and "\n" not in text, text
    assert "wrong-secret-123" not in text


@pytest.mark.parametrize("args, words", [
    (["s3://nobucket/x.zarr"], "no bucket 'nobucket'"),
    (["s3://data/missing.zarr"], "no Zarr array at 's3://data/missing.zarr'"),
    ([URL, "--storage-option", "key=AKIAWRONGKEY", "--storage-option",
      "secret=wrong-secret-123"], "access denied"),
], ids=["wrong-bucket", "missing-key", "bad-credentials"])
def test_cli_errors_are_one_line_and_never_show_secrets(s3, tmp_path, capsys, args, words):
    status = main(["train", *args, "--out", str(tmp_path / "m.zarr"), "--max-iter", "1",
                   "--quiet"])
    out, err = capsys.readouterr()
    assert status == 2
    assert err.startswith("streamae: error: ") and err.count("\n") == 1, err
    assert words in err
    assert "wrong-secret-123" not in out + err and s3.secret not in out + err


def test_writing_a_model_to_a_missing_bucket(s3):
    model = SparseAutoencoder(**{**MODEL, "max_iter": 1}).fit(URL)
    with pytest.raises(OSError, match="no bucket 'nomodels'") as exc:
        model.save("s3://nomodels/m.zarr")
    assert "\n" not in str(exc.value)


def test_storage_option_parsing():
    assert _storage_option("endpoint_url=http://127.0.0.1:9000") == (
        "endpoint_url", "http://127.0.0.1:9000")
    assert _storage_option("anon=true") == ("anon", True)
    assert _storage_option("max_concurrency=4") == ("max_concurrency", 4)
    assert storage_options([("endpoint_url", "http://h:1"),
                            ("client_kwargs.region_name", "eu-west-1")]) == {
        "endpoint_url": "http://h:1", "client_kwargs": {"region_name": "eu-west-1"}}
    assert storage_options([]) is None
    with pytest.raises(argparse.ArgumentTypeError) as exc:
        _storage_option("secret")
    assert "secret" not in str(exc.value).split("e.g.")[0]


def test_zarr_reads_s3_urls_with_storage_options(s3):
    opts = {"endpoint_url": s3.endpoint, "key": s3.key, "secret": s3.secret}
    z = zarr.open_array(URL, mode="r", storage_options=opts)
    local = zarr.open_array(s3.local_copy, mode="r")
    np.testing.assert_array_equal(z[:CHUNK], local[:CHUNK])


# ------------------------------------------------------------------ one line, and nothing after it

STORE_ERRORS = {
    "unreachable-endpoint": ([URL, "--storage-option", "endpoint_url=http://127.0.0.1:9"],
                             f"cannot reach the object store for '{URL}'"),
    "wrong-bucket": (["s3://nobucket/x.zarr"], "no bucket 'nobucket'"),
    "bad-credentials": ([URL, "--storage-option", "key=AKIAWRONGKEY", "--storage-option",
                         "secret=wrong-secret-123"], "access denied"),
}
SCHEDULERS = {"threads": [], "synchronous": ["--scheduler", "synchronous"],
              "processes": ["--scheduler", "processes", "--workers", "2"],
              "local-cluster": ["--workers", "2"]}


@pytest.mark.parametrize("scheduler", [
    pytest.param(s, marks=() if s == "threads" else pytest.mark.slow) for s in SCHEDULERS])
@pytest.mark.parametrize("case", list(STORE_ERRORS))
def test_store_errors_print_one_line_until_the_process_ends(s3, tmp_path, case, scheduler):
    """The command in its own process: nothing after the error line, up to the
    interpreter's exit (requests Zarr abandoned, event loops, sessions)."""
    args, words = STORE_ERRORS[case]
    done = subprocess.run([sys.executable, "-m", "streamae.cli", "train", *args, "--out",
                           str(tmp_path / "m.zarr"), "--max-iter", "1", "--quiet",
                           *SCHEDULERS[scheduler]],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    err = done.stderr.splitlines()
    assert done.returncode == 2, done.stderr
    assert len(err) == 1 and err[0].startswith("streamae: error: ") and words in err[0], err
    assert "wrong-secret-123" not in done.stdout + done.stderr
