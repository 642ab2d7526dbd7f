"""Progress: one labelled bar per long phase; a bar of chunks done within a pass;
plain log lines (no carriage returns, no escapes) when stderr is not a terminal."""

import os
import subprocess
import sys

import dask
import numpy as np
import pytest
from tqdm.std import tqdm

from streamae import SparseAutoencoder, _progress
from streamae._store import write_array


@pytest.fixture
def store(tmp_path, rng):
    X = rng.uniform(0.05, 0.95, size=(700, 6))
    write_array(tmp_path / "x.zarr", X, chunk_rows=100)  # 7 chunks
    return str(tmp_path / "x.zarr")


@pytest.fixture
def finished_bars(monkeypatch):
    """(label, steps counted, total, unit) of every bar, when it closes."""
    done = []
    make = _progress.bar

    def recording(label, total=None, unit="it", **kw):
        progress = make(label, total, unit, **kw)
        close = progress.close

        def closing(*args, **kwargs):
            if not getattr(progress, "recorded", False):
                progress.recorded = True
                done.append((label, progress.n, progress.total, unit))
            close(*args, **kwargs)

        progress.close = closing
        return progress

    monkeypatch.setattr(_progress, "bar", recording)
    return done


def chunk_bars(bars):
    """The bars of passes over the data: counted in tasks (runs of chunks)."""
    return [(label, n, total) for label, n, total, unit in bars if unit == "task"]


@pytest.mark.parametrize("strategy, labels", [
    ("one-pass", ["one-pass"]),
    ("two-pass", ["two-pass 1/2", "two-pass 2/2"]),
    ("cached", ["cached 1/2", "cached 2/2"]),
])
@pytest.mark.parametrize("scheduler", ["threads", "synchronous", "processes"])
def test_each_pass_counts_its_tasks(store, strategy, labels, scheduler, finished_bars,
                                     monkeypatch, capsys):
    monkeypatch.setattr(_progress, "DELAY", 0.0)  # show every pass, however short
    model = SparseAutoencoder(n_hidden=3, strategy=strategy, max_iter=2, verbose=True,
                              run_options={"scheduler": scheduler}).fit(store)
    # The first evaluation measures the data variance from its own reads; the
    # cached strategy (whose first pass keeps activations) runs a pass for it.
    passes = (["data variance"] if strategy == "cached" else []) + labels * model.evaluations_
    assert chunk_bars(finished_bars) == [(label, 7, 7) for label in passes]
    assert ("data variance:" in capsys.readouterr().err) == (strategy == "cached")


def test_start_up_and_iterations_are_labelled(store, finished_bars, capsys):
    SparseAutoencoder(n_hidden=3, max_iter=2, verbose=True).fit(store)
    labels = [label for label, *_ in finished_bars]
    assert labels[0] == "compiling kernels" and labels[-1] == "fit one-pass"
    assert ("fit one-pass", 2, 2, "it") in finished_bars
    err = capsys.readouterr().err
    assert "streamae: compiling kernels: done" in err
    assert "streamae: fit one-pass: 2/2 it (100%)" in err


def test_no_bar_for_short_passes_or_without_progress(store, finished_bars, monkeypatch,
                                                     capsys):
    SparseAutoencoder(n_hidden=3, max_iter=2, verbose=True).fit(store)
    assert "chunk" not in capsys.readouterr().err  # every pass shorter than DELAY
    assert chunk_bars(finished_bars)  # counted all the same
    finished_bars.clear()
    monkeypatch.setattr(_progress, "DELAY", 0.0)
    SparseAutoencoder(n_hidden=3, max_iter=2).fit(store)
    assert capsys.readouterr().err == "" and chunk_bars(finished_bars) == []


def test_a_pass_bar_counts_only_kernel_tasks_and_takes_its_total_from_the_graph():
    progress = _progress.LogBar("pass", None, "task", enabled=False)
    counter = _progress._TaskCounter(progress, _progress.CHUNK_TASKS)
    keys = [("_task_one_pass-abc",), "_combine-1", "_task_one_pass-def",
            "_task_sample_and_moments-x", ("other", 0)]
    counter._start_state({}, {"ready": keys[:2], "waiting": keys[2:]})
    assert progress.total == 3
    for key in keys:
        counter._posttask(key, None, {}, {}, 0)
    assert progress.n == 3


def test_a_pass_without_kernel_tasks_counts_all_of_them():
    """E.g. reading the warm-up's subsample: its tasks are counted, not left at 0."""
    progress = _progress.LogBar("warm-up: reading the subsample", None, "task",
                                enabled=False)
    counter = _progress._TaskCounter(progress, _progress.CHUNK_TASKS)
    keys = [("getitem-1", 0), ("getitem-1", 1), "finalize-2"]
    counter._start_state({}, {"ready": keys, "waiting": []})
    for key in keys:
        counter._posttask(key, None, {}, {}, 0)
    assert (progress.n, progress.total) == (3, 3)


def test_a_count_is_never_shown_past_its_total(capsys):
    with _progress.bar("data variance", 10, "task") as progress:
        progress.update(153)
    assert capsys.readouterr().err.startswith("streamae: data variance: 10/10 task (100%), ")


def test_task_progress_counts_every_task_of_every_compute(finished_bars, capsys):
    with _progress.task_progress("import", delay=0.0):
        dask.compute(*[dask.delayed(abs)(-i) for i in range(5)], scheduler="synchronous")
        dask.compute(dask.delayed(abs)(-1), scheduler="threads")
    assert finished_bars == [("import", 6, 6, "task")]
    assert capsys.readouterr().err.startswith("streamae: import: 6/6 task (100%), ")


def test_log_lines_are_periodic_and_plain(monkeypatch, capsys):
    monkeypatch.setattr(_progress, "LOG_EVERY", 0.0)
    with _progress.bar("fit one-pass", 3) as progress:
        for _ in range(3):
            progress.update(1)
            progress.set_postfix(cost="0.5")
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("streamae: fit one-pass: 1/3 it (33%), ")
    assert lines[-1].startswith("streamae: fit one-pass: 3/3 it (100%), ")
    assert lines[-1].endswith(", cost=0.5")
    assert len(lines) == 4  # one per update and one at the end


def test_a_failed_phase_prints_no_final_line(capsys):
    with pytest.raises(RuntimeError), _progress.bar("import", 3):
        raise RuntimeError("boom")
    assert capsys.readouterr().err == ""


def test_a_terminal_gets_a_tqdm_bar(monkeypatch):
    monkeypatch.setattr(_progress, "interactive", lambda: True)
    progress = _progress.bar("fit one-pass", 3)
    try:
        assert isinstance(progress, tqdm) and progress.desc == "fit one-pass"
    finally:
        progress.close()
    assert isinstance(_progress.bar("x", 3, enabled=False), _progress.LogBar)


def _run_cli(args, cwd, log):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    with open(log, "w") as err:
        subprocess.run([sys.executable, "-m", "streamae.cli", *args], cwd=cwd, stderr=err,
                       stdout=subprocess.DEVNULL, env=env, check=True)
    with open(log, newline="") as f:
        return f.read()


def test_a_redirected_log_has_no_carriage_returns_or_escapes(tmp_path, rng):
    np.save(tmp_path / "x.npy", rng.uniform(0, 1, size=(300, 6)))
    logs = [
        _run_cli(["import", "x.npy", "x.zarr", "--chunk-rows", "50"], tmp_path,
                 tmp_path / "import.log"),
        _run_cli(["train", "x.zarr", "--out", "m.zarr", "--hidden", "3", "--max-iter", "3"],
                 tmp_path, tmp_path / "train.log"),
        _run_cli(["encode", "m.zarr", "x.zarr", "h.zarr"], tmp_path, tmp_path / "encode.log"),
    ]
    for log in logs:
        assert "\r" not in log and "\x1b" not in log, log
    assert "streamae: compiling kernels: done" in logs[1]
    assert "streamae: fit one-pass: 3/3 it (100%)" in logs[1]


# ----------------------------------------------------------------- what `streamae train` shows

_LINE = r"^streamae: (?P<label>[^:]+(?:: [^:0-9]+)?): (?P<count>.+?), [0-9.]+ s(?:, (?P<post>.*))?$"


def _train(store, out, *extra):
    return ["train", store, "--out", out, "--hidden", "3", *extra]


def _log_lines(err):
    import re

    return [m.groupdict() for m in map(re.compile(_LINE).match, err.splitlines()) if m]


def test_train_log_counts_right_and_labels_every_phase(store, tmp_path, monkeypatch, capsys):
    from streamae.cli import main

    monkeypatch.setattr(_progress, "DELAY", 0.0)  # every pass gets its bar
    out = str(tmp_path / "m.zarr")
    assert main(_train(store, out, "--max-iter", "3", "--warmup", "subsample")) == 0
    captured = capsys.readouterr()
    lines = _log_lines(captured.err)
    labels = [line["label"] for line in lines]
    for label in ("compiling kernels", "warm-up: reading the sample",
                  "warm-up level 1/4 (1/256 of the rows)", "warm-up level 4/4 (1/4 of the rows)",
                  "fit one-pass"):
        assert label in labels, (label, labels)
    assert "data variance" not in labels  # measured by the sample's read
    for line in lines:
        count = line["count"]
        if "/" in count:  # N/T unit (P%): never past the total, never a 0/T final line
            done, rest = count.split("/", 1)
            total, unit = rest.split(" ")[:2]
            assert 0 < int(done) <= int(total), line
            assert unit in ("it", "task"), line
    fit = [line for line in lines if line["label"] == "fit one-pass"]
    assert len(fit) == 1 and fit[0]["count"] == "3/3 it (100%)"
    cost = SparseAutoencoder.load(out).history_[-1]["cost"]
    assert fit[0]["post"].startswith(f"cost={cost:.5g},")


def test_a_terminal_bar_never_shows_a_stale_cost(store, tmp_path, monkeypatch, capsys):
    """The bar's last redraws all show the last iteration's cost, not the one before."""
    import functools

    from streamae.cli import main

    monkeypatch.setattr(_progress, "interactive", lambda: True)
    # Redraw at every update, as a slow fit does (each iteration longer than 0.1 s).
    monkeypatch.setattr(tqdm, "__init__", functools.partialmethod(
        tqdm.__init__, mininterval=0, miniters=1))
    out = str(tmp_path / "m.zarr")
    assert main(_train(store, out, "--max-iter", "3")) == 0
    err = capsys.readouterr().err
    cost = f"cost={SparseAutoencoder.load(out).history_[-1]['cost']:.5g},"
    finals = [part for part in err.replace("\r", "\n").splitlines()
              if part.startswith("fit one-pass") and "3/3" in part]
    assert finals and all(cost in part for part in finals), finals


def test_a_resumed_run_does_not_measure_the_data_variance_again(store, tmp_path, monkeypatch,
                                                               capsys):
    from streamae.cli import main

    reference = SparseAutoencoder(n_hidden=3, max_iter=4).fit(store)
    out = str(tmp_path / "m.zarr")
    assert main(_train(store, out, "--max-iter", "2", "--quiet")) == 0
    monkeypatch.setattr(_progress, "DELAY", 0.0)
    capsys.readouterr()
    assert main(_train(store, out, "--max-iter", "4", "--resume")) == 0
    err = capsys.readouterr().err
    assert "streamae: one-pass:" in err  # pass bars are on...
    assert "data variance" not in err  # ...and this one is not run again
    resumed = SparseAutoencoder.load(out)
    assert [r["explained_variance"] for r in resumed.history_] == \
        [r["explained_variance"] for r in reference.history_]


def test_cost_chart_tells_the_phases_apart_on_an_axis_of_data_passes():
    from streamae._plots import cost_figure

    def record(i, phase, passes, cost):
        return {"iteration": i, "phase": phase, "data_passes": passes, "cost": cost,
                "reconstruction": cost / 2, "sparsity": cost / 4, "weight_decay": cost / 8}

    history = [record(i, "warmup", i / 16, 2.0 - i / 10) for i in range(4)]
    history += [record(i, "full", 0.25 + i, 1.0 - i / 10) for i in range(3)]
    ax = cost_figure(history).axes[0]
    assert ax.get_xlabel() == "passes over the data"
    lines = {line.get_label(): line for line in ax.get_lines()}
    warm, full = lines["_cost (warm-up, subsample)"], lines["cost"]  # "_": not in the legend
    assert list(warm.get_xdata()) == [0, 1 / 16, 2 / 16, 3 / 16]
    assert list(full.get_xdata()) == [0.25, 1.25, 2.25]  # no restart at 0
    assert warm.get_linestyle() != full.get_linestyle()
    assert list(lines["full-data fit starts"].get_xdata()) == [0.25, 0.25]
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert legend == ["cost", "reconstruction", "sparsity", "weight decay",
                      "warm-up on a subsample", "full-data fit starts"]
