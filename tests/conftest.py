"""Shared fixtures of the core trainer tests (kernels, objective, engine,
estimator, CLI, memory), and the quick subset ``pytest -m smoke``.

Randomness comes only from ``np.random.default_rng(seed)`` fixtures; nothing
sets a global seed.
"""

import os
import uuid

import numpy as np
import pytest
import zarr

from streamae._objective import init_params, make_hyper

# Hyperparameters of the small test problems: a target activation the random
# initial weights are near (rho 0.1), so that every term of the objective and
# of the gradient is of a similar size and a mistake in any of them shows.
HYPER = {"rho": 0.1, "beta": 3.0, "weight_decay": 1e-3}


def _problem(rng, m, n, s, low=0.0, high=1.0, bias_scale=0.1):
    """Data uniform in [low, high] and the exercise's initial weights, with
    small random biases (zero biases would hide a bias-gradient mistake)."""
    X = rng.uniform(low, high, size=(m, n))
    params = init_params(n, s, rng)
    params["b1"] = rng.normal(0.0, bias_scale, s)
    params["b2"] = rng.normal(0.0, bias_scale, n)
    return X, params


@pytest.fixture
def rng():
    return np.random.default_rng(20240611)


@pytest.fixture
def hyper_kw():
    """The test hyperparameters as keyword arguments (rho, beta, weight_decay)."""
    return dict(HYPER)


@pytest.fixture
def hyper():
    return make_hyper(**HYPER)


@pytest.fixture
def make_problem(rng):
    """``make_problem(m, n, s, **kw) -> (X float64 (m, n), params dict float64)``."""

    def make(m=50, n=8, s=5, **kw):
        return _problem(rng, m, n, s, **kw)

    return make


@pytest.fixture
def problem(make_problem):
    """A small problem: 50 rows, 8 visible, 5 hidden."""
    return make_problem(50, 8, 5)


@pytest.fixture
def write_zarr(tmp_path):
    """``write_zarr(X, chunk_rows, name="x.zarr", **create_kw) -> str`` path of a
    Zarr v3 array in tmp_path chunked by rows (zarr.create_array)."""

    def write(X, chunk_rows, name="x.zarr", **create_kw):
        X = np.asarray(X)
        path = str(tmp_path / name)
        z = zarr.create_array(path, shape=X.shape, chunks=(chunk_rows, X.shape[1]),
                              dtype=X.dtype, **create_kw)
        z[...] = X
        return path

    return write


@pytest.fixture(autouse=True, scope="session")
def one_store_chunk_per_task():
    """Tasks of one Zarr chunk each, as the tests' small stores are chunked to
    give many tasks (by default streamae groups chunks smaller than 16 MiB;
    tests/test_chunkread.py tests the grouping). Session-wide, so that
    module-scoped fixtures see it too."""
    from streamae import _data

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_data, "TASK_BYTES", 0)
        yield


# ---------------------------------------------------------------- the store-kind matrix

STORE_KINDS = ("local", "compressed", "sharded", "memory", "s3")


@pytest.fixture(scope="module")
def s3_env(tmp_path_factory):
    """A moto S3 server on 127.0.0.1 (bucket ``data``) and its credentials in this
    process's environment, for the tests of one module."""
    pytest.importorskip("s3fs")
    pytest.importorskip("moto")
    from cluster_fixtures import MotoServer

    with MotoServer(tmp_path_factory.mktemp("moto") / "moto") as server, \
            pytest.MonkeyPatch.context() as mp:
        for key in [k for k in os.environ if k.startswith("AWS_")]:
            mp.delenv(key)
        for key, value in server.env().items():
            mp.setenv(key, value)
        server.create_bucket("data")
        server.require_auth()
        yield server


@pytest.fixture(params=STORE_KINDS)
def store_kind(request, tmp_path):
    """``(kind, put, options)``: ``put(X, chunk_rows) -> data`` holding ``X`` (m, n)
    as one kind of input: a local Zarr v3 store uncompressed, compressed (Zarr's
    default zstd) or sharded (shards of 4 chunks), the NumPy array itself, or a
    store at an s3:// URL on the local moto server; ``options``: the run options
    that reach it (its ``storage_options``).

    The S3 stores are reached with explicit storage options, not the server's
    environment: s3fs keeps one file system per set of options, and one made
    from the environment would outlive this server into other tests'."""
    kind = request.param
    so = None
    if kind == "s3":
        env = request.getfixturevalue("s3_env").env()
        so = {"key": env["AWS_ACCESS_KEY_ID"], "secret": env["AWS_SECRET_ACCESS_KEY"],
              "endpoint_url": env["AWS_ENDPOINT_URL"]}

    def put(X, chunk_rows):
        X = np.asarray(X)
        if kind == "memory":
            return X
        n = X.shape[1]
        kw = {"compressors": None} if kind == "local" else {}
        if kind == "sharded":
            kw["shards"] = (4 * chunk_rows, n)
        name = f"{kind}-{uuid.uuid4().hex}.zarr"
        where = f"s3://data/{name}" if kind == "s3" else str(tmp_path / name)
        if so:
            kw["storage_options"] = so
        z = zarr.create_array(where, shape=X.shape, chunks=(chunk_rows, n), dtype=X.dtype, **kw)
        z[...] = X
        return where

    return kind, put, {"storage_options": so} if so else {}


# ----------------------------------------------------------------- pytest -m smoke

#: The quick subset: a few fast tests of each file, which between them run
#: every module of streamae (kernels to command line) in about a minute.
#: ``pytest -m smoke`` runs them; a name that matches no test is an error.
SMOKE = {
    "test_kernels.py": ("test_hidden_sum", "test_backprop_sums"),
    "test_objective.py": ("test_gradient_check_every_strategy", "test_relative_difference"),
    "test_engine.py": ("test_strategies_match_reference",),
    "test_chunkread.py": ("test_uncompressed_local_store_is_read_directly_and_exactly",),
    "test_estimator.py": ("test_fit_lowers_the_cost",),
    "test_warmup.py": ("test_plan_depends_on_the_shape_and_model_size_only",
                       "test_fit_ends_on_the_exact_full_objective"),
    "test_linear_decoder.py": ("test_one_pass_kernel_matches_numpy",),
    "test_guards.py": ("test_saturated_rho_hat_names_the_units",),
    "test_resume.py": ("test_resume_is_bit_identical",),
    "test_validation.py": ("test_checks_match_a_numpy_reference_and_leave_the_training_unchanged",
                           "test_early_stopping_stops_on_the_rule_and_keeps_the_best_weights"),
    "test_signals.py": ("test_signal_during_the_first_streaming_pass_is_handled",),
    "test_cluster.py": ("test_scheduler_names",),
    "test_sklearn.py": ("test_init_stores_arguments_and_set_params_changes_them",),
    "test_metrics.py": ("test_dead_and_saturated_thresholds",
                        "test_jsonl_written_on_save_and_streamed"),
    "test_progress.py": ("test_log_lines_are_periodic_and_plain",
                         "test_a_count_is_never_shown_past_its_total"),
    "test_cli.py": ("test_train_writes_a_loadable_model",
                    "test_deleting_the_model_and_training_again_works",
                    "test_photos_writes_the_sample_photographs_and_refuses_to_overwrite"),
    "test_cli_help.py": ("test_every_command_has_a_description",
                         "test_the_checkpoint_rule_reads_the_same_in_help_and_docs"),
    "test_hints.py": ("test_the_cli_shows_keywords_as_its_flags",
                      "test_nan_is_not_sent_to_a_rescaling_that_refuses_it"),
    "test_bad_inputs.py": ("test_docs_table_matches_rows",),
    "test_damaged.py": ("test_chunk_error_message",),
    "test_display.py": ("test_grid_shape_and_tile_scaling",),
    "test_show.py": ("test_show_writes_three_pngs",),
    "test_images.py": ("test_normalize_matches_reference_and_range",),
    "test_patches.py": ("test_streaming_std_is_numpy_std_over_all_values",),
    "test_import.py": ("test_npy_round_trip",),
    "test_whiten.py": ("test_centred_scatter_matches_numpy",),
    "test_encode.py": ("test_encode_equals_transform_in_chunks_for_the_next_pass",),
    "test_passes.py": ("test_merge_moments_of_vectors_and_matrices",
                       "test_written_pass_tasks_are_few_and_own_whole_output_chunks"),
    "test_docs.py": ("test_usage_lines_of_the_cli_page_match_the_parser",
                     "test_relative_links_resolve"),
}


def pytest_collection_modifyitems(config, items):
    """Mark the tests named in `SMOKE` ``smoke``; refuse a name that matches nothing."""
    found = set()
    for item in items:
        name = getattr(item, "originalname", item.name)
        if name in SMOKE.get(item.path.name, ()):
            item.add_marker(pytest.mark.smoke)
            found.add((item.path.name, name))
    # A name is checked against the module's own tests, so that a run of a few
    # node ids (which collects only those) is not refused.
    modules = {item.path.name: item.module for item in items if hasattr(item, "module")}
    missing = [f"{f}::{n}" for f, names in SMOKE.items() if f in modules for n in names
               if not callable(getattr(modules[f], n, None))]
    if missing:
        raise pytest.UsageError(f"tests/conftest.py SMOKE names no test: {', '.join(missing)}")
