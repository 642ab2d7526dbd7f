"""Every Numba kernel of streamae._kernels against plain NumPy on small arrays.

The NumPy reference is computed in float64 from the *same* inputs the kernel
gets (float32 inputs are upcast exactly), so the only difference is the
kernel's arithmetic. Errors are measured relative to the largest entry of
each result: float64 measured at most 1.2e-15 (tolerance 1e-12); float32
measured at most 2.7e-7 over 20 seeds, about 2 float32 epsilons (tolerance
5e-6: products over 8 features and 5 units, sums over <= 45 rows).
"""

import numpy as np
import pytest
from helpers import sigmoid
from numpy.testing import assert_allclose, assert_array_equal

from streamae import _kernels as K

M, N, S = 45, 8, 5
ROW0 = 1000  # global index of the chunk's first row, as the engine passes it
# 9 divides 45, 16 does not (last block of 13 rows), 1 row per block, and a
# block larger than the chunk.
BLOCK_ROWS = [1, 9, 16, 100]
DTYPES = [np.float32, np.float64]
RTOL = {np.float64: 1e-12, np.float32: 5e-6}


def close(actual, expected, dtype):
    """Equal up to ``RTOL[dtype]`` relative to the largest |expected| entry."""
    expected = np.asarray(expected, np.float64)
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    assert_allclose(np.asarray(actual, np.float64), expected, rtol=RTOL[dtype],
                    atol=RTOL[dtype] * scale)



@pytest.fixture(params=DTYPES, ids=["float32", "float64"])
def dtype(request):
    return request.param


@pytest.fixture
def chunk(rng, dtype):
    """Inputs of one chunk in ``dtype`` (C-contiguous, as the engine passes them)."""
    r = np.sqrt(6.0 / (N + S + 1))
    arrays = {
        "X": rng.uniform(0.0, 1.0, (M, N)),
        "W1": rng.uniform(-r, r, (S, N)),
        "b1": rng.normal(0.0, 0.3, S),
        "W2": rng.uniform(-r, r, (N, S)),
        "b2": rng.normal(0.0, 0.3, N),
        "c": rng.normal(0.0, 2.0, S),  # the sparsity coefficient, any value
    }
    return {k: np.ascontiguousarray(v, dtype=dtype) for k, v in arrays.items()}


def reference(X, W1, b1, W2, b2, c, A2=None):
    """Every sum the kernels return, in float64 NumPy (rows are samples).

    ``A2`` replaces the hidden activations (the cached strategy's input).
    """
    X, W1, b1, W2, b2, c = (np.asarray(a, np.float64) for a in (X, W1, b1, W2, b2, c))
    a2 = sigmoid(X @ W1.T + b1) if A2 is None else np.asarray(A2, np.float64)
    fp2 = a2 * (1 - a2)
    a3 = sigmoid(a2 @ W2.T + b2)
    d3 = (a3 - X) * a3 * (1 - a3)
    e2 = (d3 @ W2) * fp2
    d2 = e2 + c * fp2
    return {
        "a2": a2, "fp2": fp2, "d3": d3,
        "sum_a2": a2.sum(axis=0),
        "sq": float(np.sum((a3 - X) ** 2)),
        "gW1": d2.T @ X, "gb1": d2.sum(axis=0),
        "gW2": d3.T @ a2, "gb2": d3.sum(axis=0),
        "gW1r": e2.T @ X, "gb1r": e2.sum(axis=0),
        "fpX": fp2.T @ X, "sum_fp": fp2.sum(axis=0),
    }


# ----------------------------------------------------------------- public kernels

@pytest.mark.parametrize("block_rows", BLOCK_ROWS)
def test_hidden_sum(chunk, dtype, block_rows):
    p = chunk
    ref = reference(**p)
    out = K.hidden_sum(p["X"], p["W1"], p["b1"], block_rows)
    assert out.dtype == np.float64 and out.shape == (S,)
    close(out, ref["sum_a2"], dtype)


@pytest.mark.parametrize("block_rows", BLOCK_ROWS)
def test_hidden_activations(chunk, dtype, block_rows):
    p = chunk
    ref = reference(**p)
    a2, sum_a2 = K.hidden_activations(p["X"], p["W1"], p["b1"], block_rows)
    assert a2.dtype == dtype and a2.shape == (M, S)
    assert sum_a2.dtype == np.float64
    close(a2, ref["a2"], dtype)
    close(sum_a2, ref["sum_a2"], dtype)


def _check_backprop(out, ref, dtype):
    sq, gW1, gb1, gW2, gb2, bad = out
    for arr, shape in ((gW1, (S, N)), (gb1, (S,)), (gW2, (N, S)), (gb2, (N,))):
        assert arr.dtype == np.float64 and arr.shape == shape
    close(sq, ref["sq"], dtype)
    close(gW1, ref["gW1"], dtype)
    close(gb1, ref["gb1"], dtype)
    close(gW2, ref["gW2"], dtype)
    close(gb2, ref["gb2"], dtype)
    assert bad.dtype == np.int64
    assert_array_equal(bad, [0, -1])


@pytest.mark.parametrize("block_rows", BLOCK_ROWS)
def test_backprop_sums(chunk, dtype, block_rows):
    p = chunk
    out = K.backprop_sums(p["X"], p["W1"], p["b1"], p["W2"], p["b2"], p["c"], ROW0, block_rows)
    _check_backprop(out, reference(**p), dtype)


@pytest.mark.parametrize("block_rows", BLOCK_ROWS)
def test_backprop_sums_cached(chunk, dtype, block_rows):
    p = chunk
    # The cached pass gets the activations of the first pass, in the data's dtype.
    A2 = np.ascontiguousarray(reference(**p)["a2"], dtype=dtype)
    out = K.backprop_sums_cached(p["X"], A2, p["W2"], p["b2"], p["c"], ROW0, block_rows)
    _check_backprop(out, reference(**p, A2=A2), dtype)


@pytest.mark.parametrize("block_rows", BLOCK_ROWS)
def test_one_pass_sums(chunk, dtype, block_rows):
    p = chunk
    ref = reference(**p)
    out = K.one_pass_sums(p["X"], p["W1"], p["b1"], p["W2"], p["b2"], ROW0, block_rows)
    sum_a2, sq, gW1r, gb1r, gW2, gb2, fpX, sum_fp, bad = out
    for arr in (sum_a2, gW1r, gb1r, gW2, gb2, fpX, sum_fp):
        assert arr.dtype == np.float64
    close(sum_a2, ref["sum_a2"], dtype)
    close(sq, ref["sq"], dtype)
    close(gW1r, ref["gW1r"], dtype)
    close(gb1r, ref["gb1r"], dtype)
    close(gW2, ref["gW2"], dtype)
    close(gb2, ref["gb2"], dtype)
    close(fpX, ref["fpX"], dtype)
    close(sum_fp, ref["sum_fp"], dtype)
    assert_array_equal(bad, [0, -1])


@pytest.mark.parametrize("block_rows", BLOCK_ROWS)
def test_one_pass_identity_matches_two_pass(chunk, block_rows):
    """The one-pass split: gW1r + diag(c) fpX == gW1 and gb1r + c sum_fp == gb1."""
    p = {k: v.astype(np.float64) for k, v in chunk.items()}
    _, sq1, gW1r, gb1r, gW2_1, gb2_1, fpX, sum_fp, _ = K.one_pass_sums(
        p["X"], p["W1"], p["b1"], p["W2"], p["b2"], ROW0, block_rows)
    sq2, gW1, gb1, gW2_2, gb2_2, _ = K.backprop_sums(
        p["X"], p["W1"], p["b1"], p["W2"], p["b2"], p["c"], ROW0, block_rows)
    close(gW1r + p["c"][:, None] * fpX, gW1, np.float64)
    close(gb1r + p["c"] * sum_fp, gb1, np.float64)
    close(sq1, sq2, np.float64)
    close(gW2_1, gW2_2, np.float64)
    close(gb2_1, gb2_2, np.float64)


def test_block_rows_do_not_change_float64_results(chunk):
    p = {k: v.astype(np.float64) for k, v in chunk.items()}
    outs = [K.one_pass_sums(p["X"], p["W1"], p["b1"], p["W2"], p["b2"], ROW0, br)
            for br in BLOCK_ROWS]
    for out in outs[1:]:
        for a, b in zip(out[:-1], outs[0][:-1], strict=True):
            close(a, b, np.float64)


@pytest.mark.parametrize("block_rows", [7, 4096])
def test_sigmoid_over_the_whole_range(dtype, block_rows):
    """The kernels' sigmoid against SciPy's expit (float64) for z in [-800, 800],
    +-Inf and NaN, through hidden_activations with W1 = [[1]] (a2 = f(x)).

    Measured: at most 1.2 (float32) and 2.2 (float64) epsilons relative where
    the sigmoid is a normal number; below that (z < -87 in float32, < -708 in
    float64) within the smallest normal number of 0. Tolerance: 4 epsilons.
    """
    from scipy.special import expit  # NumPy's 1 / (1 + exp(-z)) warns on overflow

    z = np.concatenate([np.linspace(-800, 800, 20001), np.linspace(-40, 40, 20001),
                        [-np.inf, np.inf, 0.0, -0.0, 87.0, -87.0, 88.5, -88.5, 708.5, -708.5,
                         745.2, -745.2]])
    X = np.ascontiguousarray(z.astype(dtype)[:, None])
    a2, sum_a2 = K.hidden_activations(X, np.ones((1, 1), dtype), np.zeros(1, dtype),
                                      block_rows)
    got = a2[:, 0].astype(np.float64)
    ref = expit(X[:, 0].astype(np.float64))
    info = np.finfo(dtype)
    normal = ref > info.tiny
    assert_allclose(got[normal], ref[normal], rtol=4 * info.eps, atol=0)
    assert np.all((got[~normal] >= 0) & (got[~normal] <= info.tiny))
    assert got[z == np.inf][0] == 1.0
    # Saturates to exactly 1 as the rounded exact value does (z ~ 17 in float32,
    # ~ 37 in float64): the case the KL term must detect, never hidden.
    assert np.all(got[ref.astype(dtype) == 1] == 1.0)
    assert sum_a2 == pytest.approx(np.sum(got), rel=1e-12)
    nan = K.hidden_activations(np.full((3, 1), np.nan, dtype), np.ones((1, 1), dtype),
                               np.zeros(1, dtype), block_rows)[0]
    assert np.isnan(nan).all()


# ----------------------------------------------------------------- the bad record

def _run_with_bad(name, X, p, block_rows):
    if name == "backprop_sums":
        return K.backprop_sums(X, p["W1"], p["b1"], p["W2"], p["b2"], p["c"], ROW0,
                               block_rows)[-1]
    if name == "backprop_sums_cached":
        A2 = np.full((X.shape[0], S), 0.5, X.dtype)
        return K.backprop_sums_cached(X, A2, p["W2"], p["b2"], p["c"], ROW0, block_rows)[-1]
    return K.one_pass_sums(X, p["W1"], p["b1"], p["W2"], p["b2"], ROW0, block_rows)[-1]


BAD_CASES = {
    "nan": [(23, 3, np.nan)],
    "inf": [(12, 0, np.inf)],
    "minus_inf": [(40, 7, -np.inf)],
    "below_0": [(30, 1, -1e-3)],
    "above_1": [(44, 7, 1.0 + 2**-10)],
    # several kinds, several in one row, the first in a late block
    "mixed": [(20, 0, 1.5), (20, 5, np.nan), (33, 2, -np.inf), (41, 4, -7.0),
              (44, 0, np.inf)],
}


@pytest.mark.parametrize("case", list(BAD_CASES))
@pytest.mark.parametrize("block_rows", BLOCK_ROWS)
@pytest.mark.parametrize("kernel", ["backprop_sums", "backprop_sums_cached", "one_pass_sums"])
def test_bad_record(chunk, dtype, kernel, block_rows, case):
    X = chunk["X"].copy()
    for i, j, v in BAD_CASES[case]:
        X[i, j] = v
    ok = (X >= 0) & (X <= 1)  # False for NaN
    expected = [int((~ok).sum()), ROW0 + int(np.flatnonzero(~ok.all(axis=1))[0])]
    bad = _run_with_bad(kernel, X, chunk, block_rows)
    assert_array_equal(bad, expected)


@pytest.mark.parametrize("kernel", ["backprop_sums", "backprop_sums_cached", "one_pass_sums"])
def test_bad_record_clean_data_with_exact_bounds(chunk, kernel):
    """0 and 1 themselves are valid values."""
    X = chunk["X"].copy()
    X[0, :] = 0.0
    X[-1, :] = 1.0
    assert_array_equal(_run_with_bad(kernel, X, chunk, 16), [0, -1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint8])
def test_column_moments_match_numpy(rng, dtype):
    X = (rng.uniform(0, 1, size=(1001, 7)) * (255 if dtype == np.uint8 else 1)).astype(dtype)
    mean, m2 = K.column_moments(X)
    x = X.astype(np.float64)
    np.testing.assert_allclose(mean, x.mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(m2, ((x - x.mean(axis=0)) ** 2).sum(axis=0), rtol=1e-12)
    X[3, 2] = np.nan if dtype != np.uint8 else X[3, 2]
    if dtype != np.uint8:
        mean, m2 = K.column_moments(X)
        assert np.isnan(mean[2]) and np.isnan(m2[2]) and np.isfinite(m2[[0, 1, 3]]).all()
