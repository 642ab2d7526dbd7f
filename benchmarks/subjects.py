"""What one benchmark worker process times: one full evaluation (cost and
gradient) of the sparse-autoencoder objective, by one method.

Run by ``benchmarks/run.py`` in a fresh process per subject (so that peak
RSS belongs to one subject); each function gets the case (shapes,
hyperparameters, store paths) and returns a dict with the per-repeat seconds,
the cost it computed and what it read.

Subjects
--------
streamae-one-pass, streamae-two-pass, streamae-cached
    ``SparseAutoencoder(strategy=...).cost_and_grad(store)`` with default
    run options, reading the Zarr store on local disk on every evaluation.
streamae-one-pass-zstd
    The same as one-pass, reading a copy of the store written with Zarr's
    default codec (zstd) instead of no compression.
numpy
    A vectorised float32 NumPy evaluation of the whole dataset in memory,
    written as the UFLDL ports write it (one product per line, NumPy's own
    SIMD exp, BLAS with all cores).
torch
    PyTorch CPU autograd on the same objective in memory (float32,
    ``torch.set_num_threads(2)``). Skipped when torch is not installed.
read-only, read-only-zstd
    One pass over the store that only reads: the same Dask array of the
    store's chunks that streamae builds, one task per chunk that takes the
    chunk and returns its row count. What reading costs, without compute.
read-only-zarr
    The same pass through ``dask.array.from_zarr`` (Zarr's own chunk reads)
    instead of streamae's direct reads of uncompressed local chunks.
streamae-one-pass-cold, streamae-two-pass-cold
    As streamae-one-pass and two-pass, with the store's pages evicted from
    the page cache before every evaluation (not timed): read from the disk.
disk-cold
    The disk's own rate: O_DIRECT reads of the store's chunk files on 8
    threads, pages evicted first; no compute, no page cache.
gemm, gemm-one-pass
    Only the matrix products that an evaluation needs, at the same shapes,
    with NumPy's BLAS on whole in-memory arrays: the practical limit.
    ``gemm`` is the five products of the textbook evaluation (X W1^T,
    a2 W2^T, d3 W2, d3^T a2, d2^T X); ``gemm-one-pass`` is what the one-pass
    form multiplies: the same five, with the last one on the stacked
    (m, 2s) matrix [d2 | f'(z2)], i.e. one more product of size s x n.
"""

import math
import os
import resource
import time

import numpy as np

# Matrix products (each 2 m n s flops) per evaluation, by subject.
PRODUCTS = {
    "streamae-one-pass": 6,       # 5 products, the last one 2s wide
    "streamae-one-pass-zstd": 6,
    "streamae-two-pass": 6,       # pass 1: X W1^T; pass 2: the five products
    "streamae-cached": 5,         # pass 2 reuses a2 from pass 1
    "numpy": 5,
    "torch": 5,
    "gemm": 5,
    "gemm-one-pass": 6,
    "read-only": 0,
    "read-only-zstd": 0,
    "read-only-zarr": 0,
    "streamae-one-pass-cold": 6,
    "streamae-two-pass-cold": 6,
    "disk-cold": 0,
}

# Reads of the whole store per evaluation (0: the data is already in memory).
PASSES = {
    "streamae-one-pass": 1,
    "streamae-one-pass-zstd": 1,
    "streamae-two-pass": 2,
    "streamae-cached": 2,
    "numpy": 0,
    "torch": 0,
    "gemm": 0,
    "gemm-one-pass": 0,
    "read-only": 1,
    "read-only-zstd": 1,
    "read-only-zarr": 1,
    "streamae-one-pass-cold": 1,
    "streamae-two-pass-cold": 2,
    "disk-cold": 1,
}

TORCH_HINT = "torch is not installed (pip install torch==2.13.0 to include it)"


def init_params(n, s, seed=0):
    """The UFLDL initialisation in float32: biases 0, weights U(-r, r)."""
    rng = np.random.default_rng(seed)
    r = math.sqrt(6.0) / math.sqrt(n + s + 1)
    return {
        "W1": rng.uniform(-r, r, (s, n)).astype(np.float32),
        "b1": np.zeros(s, np.float32),
        "W2": rng.uniform(-r, r, (n, s)).astype(np.float32),
        "b2": np.zeros(n, np.float32),
    }


def peak_rss_bytes():
    """Peak resident set size of this process so far (Linux: ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _timed(evaluate, repeats, warmup, before=None):
    """Run ``evaluate`` warmup + repeats times (each after ``before()``, not timed);
    seconds of the timed runs and the last value."""
    value = None
    for _ in range(warmup):
        value = evaluate()
    seconds = []
    for _ in range(repeats):
        if before is not None:
            before()
        t0 = time.perf_counter()
        value = evaluate()
        seconds.append(time.perf_counter() - t0)
    return seconds, value


def _load(store):
    import zarr

    return zarr.open_array(store, mode="r")[...]


# ----------------------------------------------------------------- subjects

def run_streamae(case, subject, repeats, warmup):
    from streamae import SparseAutoencoder

    strategy = subject.removeprefix("streamae-").removesuffix("-zstd").removesuffix("-cold")
    store = case["store_zstd"] if subject.endswith("-zstd") else case["store"]
    before = None
    if subject.endswith("-cold"):
        from cold import chunk_files, evict

        files = chunk_files(store)
        before = lambda: evict(files)  # noqa: E731
    rho, beta, lam = case["hyper"]
    model = SparseAutoencoder.from_weights(**init_params(case["n"], case["s"]), rho=rho,
                                           beta=beta, weight_decay=lam, dtype="float32",
                                           strategy=strategy)
    rss_before = peak_rss_bytes()

    def evaluate():
        cost, grad = model.cost_and_grad(store)
        return cost, float(np.sqrt(sum(np.sum(g * g) for g in grad.values())))

    seconds, (cost, gnorm) = _timed(evaluate, repeats, warmup, before)
    rss_timed = peak_rss_bytes()
    # More untimed evaluations, as a training run does: the C allocator keeps
    # some freed chunk buffers, so RSS creeps up over the first evaluations
    # before it levels off; the peak reported is the level reached.
    for _ in range(case.get("settle", 0)):
        evaluate()
    return {"seconds": seconds, "cost": cost, "grad_norm": gnorm,
            "rss_before_bytes": rss_before, "rss_after_timed_bytes": rss_timed,
            "settle_evaluations": case.get("settle", 0)}


def numpy_cost_and_grad(X, W1, b1, W2, b2, rho, beta, lam):
    """The UFLDL vectorised evaluation, in the dtype of X (float32 here).

    Deliberately not `streamae.reference_cost_and_grad`: that is the
    library's correctness reference and works in float64; this is the
    float32 code a user would time against, kept independent of streamae.
    """
    m = X.shape[0]
    a2 = 1 / (1 + np.exp(-(X @ W1.T + b1)))
    a3 = 1 / (1 + np.exp(-(a2 @ W2.T + b2)))
    rho_hat = a2.mean(axis=0, dtype=np.float64)
    kl = np.sum(rho * np.log(rho / rho_hat) + (1 - rho) * np.log((1 - rho) / (1 - rho_hat)))
    diff = a3 - X
    cost = (0.5 * float(np.sum(diff * diff)) / m
            + 0.5 * lam * (np.sum(W1 * W1) + np.sum(W2 * W2)) + beta * kl)
    d3 = diff * a3 * (1 - a3)
    sparse = (beta * (-rho / rho_hat + (1 - rho) / (1 - rho_hat))).astype(X.dtype)
    d2 = (d3 @ W2 + sparse) * a2 * (1 - a2)
    grad = {
        "W1": d2.T @ X / m + lam * W1,
        "b1": d2.mean(axis=0),
        "W2": d3.T @ a2 / m + lam * W2,
        "b2": d3.mean(axis=0),
    }
    return float(cost), grad


def run_numpy(case, subject, repeats, warmup):
    X = _load(case["store"])
    p = init_params(case["n"], case["s"])
    rho, beta, lam = case["hyper"]
    rss_before = peak_rss_bytes()

    def evaluate():
        cost, grad = numpy_cost_and_grad(X, p["W1"], p["b1"], p["W2"], p["b2"], rho, beta, lam)
        return cost, float(np.sqrt(sum(np.sum(g.astype(np.float64) ** 2)
                                       for g in grad.values())))

    seconds, (cost, gnorm) = _timed(evaluate, repeats, warmup)
    return {"seconds": seconds, "cost": cost, "grad_norm": gnorm,
            "rss_before_bytes": rss_before}


def run_torch(case, subject, repeats, warmup):
    try:
        import torch
    except ImportError:
        return {"skipped": TORCH_HINT}
    torch.set_num_threads(2)
    X = torch.from_numpy(_load(case["store"]))
    params = {k: torch.from_numpy(v).requires_grad_() for k, v in
              init_params(case["n"], case["s"]).items()}
    rho, beta, lam = case["hyper"]
    W1, b1, W2, b2 = (params[k] for k in ("W1", "b1", "W2", "b2"))
    m = X.shape[0]
    rss_before = peak_rss_bytes()

    def evaluate():
        for t in params.values():
            t.grad = None
        a2 = torch.sigmoid(X @ W1.T + b1)
        a3 = torch.sigmoid(a2 @ W2.T + b2)
        rho_hat = a2.mean(dim=0)
        kl = torch.sum(rho * torch.log(rho / rho_hat)
                       + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat)))
        cost = (0.5 * torch.sum((a3 - X) ** 2) / m
                + 0.5 * lam * (torch.sum(W1 * W1) + torch.sum(W2 * W2)) + beta * kl)
        cost.backward()
        gnorm = math.sqrt(sum(float(torch.sum(t.grad.double() ** 2)) for t in params.values()))
        return float(cost), gnorm

    seconds, (cost, gnorm) = _timed(evaluate, repeats, warmup)
    return {"seconds": seconds, "cost": cost, "grad_norm": gnorm,
            "rss_before_bytes": rss_before, "torch_version": torch.__version__,
            "torch_threads": torch.get_num_threads()}


def run_gemm(case, subject, repeats, warmup):
    m, n, s = case["m"], case["n"], case["s"]
    X = _load(case["store"])
    rng = np.random.default_rng(1)
    p = init_params(n, s)
    W1, W2 = p["W1"], p["W2"]
    a2 = rng.random((m, s), np.float32)
    d3 = rng.random((m, n), np.float32)
    width = 2 * s if subject == "gemm-one-pass" else s
    d2 = rng.random((m, width), np.float32)
    rss_before = peak_rss_bytes()

    def evaluate():
        X @ W1.T
        a2 @ W2.T
        d3 @ W2
        d3.T @ a2
        d2.T @ X

    seconds, _ = _timed(evaluate, repeats, warmup)
    return {"seconds": seconds, "cost": None, "grad_norm": None,
            "rss_before_bytes": rss_before}


def _rows_of(block):
    return np.ascontiguousarray(block, dtype=np.float32).shape[0]


def run_read_only(case, subject, repeats, warmup):
    import dask
    import dask.array as da
    import zarr

    from streamae._data import open_dataset

    store = case["store_zstd"] if subject.endswith("-zstd") else case["store"]
    rss_before = peak_rss_bytes()

    def evaluate():
        z = zarr.open_array(store, mode="r")
        if subject.endswith("-zarr"):  # Zarr's own reads, for comparison
            array = da.from_zarr(z, chunks=(z.chunks[0], z.shape[1]))
        else:
            array = open_dataset(z).array
        blocks = array.to_delayed().ravel()
        rows = dask.compute(*[dask.delayed(_rows_of)(b) for b in blocks], scheduler="threads")
        assert sum(rows) == z.shape[0]

    seconds, _ = _timed(evaluate, repeats, warmup)
    return {"seconds": seconds, "cost": None, "grad_norm": None,
            "rss_before_bytes": rss_before}


def run_disk(case, subject, repeats, warmup):
    from cold import chunk_files, disk_limit

    files = chunk_files(case["store"])
    seconds = [disk_limit(files, 8)[0] for _ in range(repeats)]
    return {"seconds": seconds, "cost": None, "grad_norm": None}


RUNNERS = {
    "streamae-one-pass": run_streamae,
    "streamae-one-pass-zstd": run_streamae,
    "streamae-two-pass": run_streamae,
    "streamae-cached": run_streamae,
    "numpy": run_numpy,
    "torch": run_torch,
    "gemm": run_gemm,
    "gemm-one-pass": run_gemm,
    "read-only": run_read_only,
    "read-only-zstd": run_read_only,
    "read-only-zarr": run_read_only,
    "streamae-one-pass-cold": run_streamae,
    "streamae-two-pass-cold": run_streamae,
    "disk-cold": run_disk,
}


def run_subject(case, subject, repeats, warmup):
    """Time ``subject`` on ``case``; adds peak RSS and the BLAS/thread set-up."""
    out = RUNNERS[subject](case, subject, repeats, warmup)
    out["peak_rss_bytes"] = peak_rss_bytes()
    out["pid"] = os.getpid()
    return out
