"""Progress within a pass: a bar of chunks done, for passes that take long."""

import pytest

from streamae import SparseAutoencoder, _progress
from streamae._store import write_array


@pytest.fixture
def store(tmp_path, rng):
    X = rng.uniform(0.05, 0.95, size=(700, 6))
    write_array(tmp_path / "x.zarr", X, chunk_rows=100)  # 7 chunks
    return str(tmp_path / "x.zarr")


@pytest.fixture
def finished_bars(monkeypatch):
    """(label, chunks counted, total) of every pass bar, when it closes."""
    done = []

    class Recording(_progress.ChunkBar):
        def close(self):
            done.append((self.bar.desc, self.bar.n, self.bar.total))
            super().close()

    monkeypatch.setattr(_progress, "ChunkBar", Recording)
    return done


@pytest.mark.parametrize("strategy, labels", [
    ("one-pass", ["one-pass"]),
    ("two-pass", ["two-pass 1/2", "two-pass 2/2"]),
    ("cached", ["cached 1/2", "cached 2/2"]),
])
@pytest.mark.parametrize("scheduler", ["threads", "synchronous", "processes"])
def test_each_pass_counts_its_chunks(store, strategy, labels, scheduler, finished_bars,
                                     monkeypatch, capsys):
    monkeypatch.setattr(_progress, "DELAY", 0.0)  # show every pass, however short
    model = SparseAutoencoder(n_hidden=3, strategy=strategy, max_iter=2, verbose=True,
                              run_options={"scheduler": scheduler}).fit(store)
    passes = ["data variance"] + labels * model.evaluations_
    assert finished_bars == [(label, 7, 7) for label in passes]
    assert "data variance:" in capsys.readouterr().err


def test_no_bar_for_short_passes_or_without_progress(store, finished_bars, monkeypatch,
                                                     capsys):
    SparseAutoencoder(n_hidden=3, max_iter=2, verbose=True).fit(store)
    assert "chunk" not in capsys.readouterr().err  # every pass shorter than DELAY
    assert finished_bars  # counted all the same
    finished_bars.clear()
    monkeypatch.setattr(_progress, "DELAY", 0.0)
    SparseAutoencoder(n_hidden=3, max_iter=2).fit(store)
    assert capsys.readouterr().err == "" and finished_bars == []


def test_chunk_bar_counts_only_chunk_tasks():
    bar = _progress.ChunkBar("pass", total=2)
    for key in [("_task_one_pass-abc",), "_combine-1", "_task_one_pass-def", "_moments-x",
                ("other", 0)]:
        bar._posttask(key, None, {}, {}, 0)
    assert bar.bar.n == 3
    bar.close()
