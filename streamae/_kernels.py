"""Numba kernels: the sparse-autoencoder maths on one chunk of rows.

Every kernel is a pure function of plain ndarrays. It walks its chunk in
blocks of ``block_rows`` rows so that the temporaries stay cache-sized, does
the matrix products with BLAS (``np.dot``) in the data's dtype, fuses all
element-wise work into single loops, and returns *partial sums* accumulated in
float64. Nothing here knows about Dask, Zarr or files.

Notation (rows are samples), for a chunk ``X`` of shape (m, n) and s hidden
units::

    z2 = X W1^T + b1        a2 = f(z2)          f(z) = 1 / (1 + exp(-z))
    z3 = a2 W2^T + b2       a3 = f(z3)          f'(z) = f(z) (1 - f(z))
    d3 = (a3 - X) * f'(z3)
    d2 = (d3 W2 + c) * f'(z2)     c = beta (-rho / rho_hat + (1 - rho) / (1 - rho_hat))

Each kernel also counts the values of X outside [0, 1] (NaN and Inf
included) and the first row where one occurs, so validation costs no extra
pass over the data.
"""

import math

import numpy as np
from numba import njit

_NJIT = dict(nogil=True, cache=True, error_model="numpy", boundscheck=False)


@njit(**_NJIT)
def _hidden(Xb, W1, b1, a2, fp2, sum_a2):
    """a2 = f(Xb W1^T + b1) into ``a2``; f'(z2) into ``fp2`` (if it has rows).

    Adds the column sums of a2 to ``sum_a2`` (float64).
    """
    one = np.ones_like(b1[:1])[0]
    z2 = np.dot(Xb, W1.T)
    keep_fp = fp2.shape[0] > 0
    for i in range(z2.shape[0]):
        for j in range(z2.shape[1]):
            a = one / (one + math.exp(-(z2[i, j] + b1[j])))
            a2[i, j] = a
            if keep_fp:
                fp2[i, j] = a * (one - a)
            sum_a2[j] += a


@njit(**_NJIT)
def _output_delta(Xb, a2, W2, b2, d3, gb2, row0, bad):
    """d3 = (a3 - Xb) f'(z3) into ``d3``; returns sum of squared errors.

    Adds column sums of d3 to ``gb2``. ``bad`` is a 2-vector
    [count of values outside [0, 1], first such row (global), or -1].
    """
    one = np.ones_like(b2[:1])[0]
    z3 = np.dot(a2, W2.T)
    sq = 0.0
    for i in range(z3.shape[0]):
        for k in range(z3.shape[1]):
            x = Xb[i, k]
            if not (x >= 0 and x <= 1):
                if bad[0] == 0:
                    bad[1] = row0 + i
                bad[0] += 1
            a = one / (one + math.exp(-(z3[i, k] + b2[k])))
            diff = a - x
            sq += diff * diff
            d = diff * a * (one - a)
            d3[i, k] = d
            gb2[k] += d
    return sq


@njit(**_NJIT)
def hidden_sum(X, W1, b1, block_rows):
    """Pass 1 of the two-pass method: the column sums of a2.

    Parameters
    ----------
    X : ndarray of shape (m, n), float32 or float64, C-contiguous
    W1 : ndarray of shape (s, n), same dtype as X
    b1 : ndarray of shape (s,)
    block_rows : int
        Rows processed at a time.

    Returns
    -------
    sum_a2 : ndarray of shape (s,), float64
        sum_i a2_i.
    """
    s = W1.shape[0]
    sum_a2 = np.zeros(s, np.float64)
    empty = np.empty((0, s), X.dtype)
    for start in range(0, X.shape[0], block_rows):
        Xb = X[start:start + block_rows]
        a2 = np.empty((Xb.shape[0], s), X.dtype)
        _hidden(Xb, W1, b1, a2, empty, sum_a2)
    return sum_a2


@njit(**_NJIT)
def hidden_activations(X, W1, b1, block_rows):
    """Forward pass to the hidden layer, keeping every activation.

    Used by the ``cached`` strategy's first pass and by ``transform``.

    Returns
    -------
    a2 : ndarray of shape (m, s), dtype of X
    sum_a2 : ndarray of shape (s,), float64
    """
    s = W1.shape[0]
    sum_a2 = np.zeros(s, np.float64)
    a2 = np.empty((X.shape[0], s), X.dtype)
    empty = np.empty((0, s), X.dtype)
    for start in range(0, X.shape[0], block_rows):
        stop = min(start + block_rows, X.shape[0])
        _hidden(X[start:stop], W1, b1, a2[start:stop], empty, sum_a2)
    return a2, sum_a2


@njit(**_NJIT)
def _backprop_block(Xb, a2, fp2, W2, b2, c, row0, bad, gW1, gb1, gW2, gb2):
    """Second half of a two-pass block: output delta, d2 with c, gradient sums."""
    d3 = np.empty((Xb.shape[0], W2.shape[0]), Xb.dtype)
    sq = _output_delta(Xb, a2, W2, b2, d3, gb2, row0, bad)
    e2 = np.dot(d3, W2)
    for i in range(e2.shape[0]):
        for j in range(e2.shape[1]):
            d = (e2[i, j] + c[j]) * fp2[i, j]
            e2[i, j] = d
            gb1[j] += d
    gW2 += np.dot(d3.T, a2)
    gW1 += np.dot(e2.T, Xb)
    return sq


@njit(**_NJIT)
def backprop_sums(X, W1, b1, W2, b2, c, row0, block_rows):
    """Pass 2 of the two-pass method: forward again, backprop with c.

    Parameters
    ----------
    X : ndarray of shape (m, n)
    W1, b1, W2, b2 : ndarrays of shapes (s, n), (s,), (n, s), (n,)
    c : ndarray of shape (s,), dtype of X
        Sparsity term of d2, from rho_hat of the whole dataset.
    row0 : int
        Global index of the chunk's first row (for error reports).
    block_rows : int

    Returns
    -------
    sq : float
        sum_i ||a3_i - x_i||^2.
    gW1 : ndarray of shape (s, n), float64
        sum_i d2_i^T x_i.
    gb1 : ndarray of shape (s,), float64
        sum_i d2_i.
    gW2 : ndarray of shape (n, s), float64
        sum_i d3_i^T a2_i.
    gb2 : ndarray of shape (n,), float64
        sum_i d3_i.
    bad : ndarray of shape (2,), int64
        [values outside [0, 1], first such global row or -1].
    """
    s, n = W1.shape
    gW1 = np.zeros((s, n), np.float64)
    gb1 = np.zeros(s, np.float64)
    gW2 = np.zeros((n, s), np.float64)
    gb2 = np.zeros(n, np.float64)
    bad = np.array([0, -1], np.int64)
    dummy = np.zeros(s, np.float64)
    sq = 0.0
    for start in range(0, X.shape[0], block_rows):
        Xb = X[start:start + block_rows]
        a2 = np.empty((Xb.shape[0], s), X.dtype)
        fp2 = np.empty((Xb.shape[0], s), X.dtype)
        _hidden(Xb, W1, b1, a2, fp2, dummy)
        sq += _backprop_block(Xb, a2, fp2, W2, b2, c, row0 + start, bad, gW1, gb1, gW2, gb2)
    return sq, gW1, gb1, gW2, gb2, bad


@njit(**_NJIT)
def backprop_sums_cached(X, A2, W2, b2, c, row0, block_rows):
    """Pass 2 of the cached strategy: like `backprop_sums`, reusing a2.

    Parameters
    ----------
    X : ndarray of shape (m, n)
    A2 : ndarray of shape (m, s)
        Hidden activations kept from the first pass.
    W2, b2, c, row0, block_rows
        As in `backprop_sums`.

    Returns
    -------
    Same as `backprop_sums`.
    """
    n, s = W2.shape
    gW1 = np.zeros((s, n), np.float64)
    gb1 = np.zeros(s, np.float64)
    gW2 = np.zeros((n, s), np.float64)
    gb2 = np.zeros(n, np.float64)
    bad = np.array([0, -1], np.int64)
    one = np.ones_like(b2[:1])[0]
    sq = 0.0
    for start in range(0, X.shape[0], block_rows):
        stop = min(start + block_rows, X.shape[0])
        a2 = A2[start:stop]
        fp2 = np.empty_like(a2)
        for i in range(a2.shape[0]):
            for j in range(s):
                fp2[i, j] = a2[i, j] * (one - a2[i, j])
        sq += _backprop_block(X[start:stop], a2, fp2, W2, b2, c, row0 + start, bad,
                              gW1, gb1, gW2, gb2)
    return sq, gW1, gb1, gW2, gb2, bad


@njit(**_NJIT)
def one_pass_sums(X, W1, b1, W2, b2, row0, block_rows):
    """Everything an evaluation needs, in one read of the chunk.

    d2 splits as ``(d3 W2) * f'(z2) + c * f'(z2)``; c depends only on rho_hat,
    so the chunk returns the c-free part and the sums that c multiplies::

        gW1 = sum_i [(d3 W2) * f'(z2)]_i^T x_i + diag(c) sum_i f'(z2_i)^T x_i

    Both products share X, so they are done as one GEMM of the stacked
    (rows, 2s) matrix ``[(d3 W2) * f'(z2) | f'(z2)]``.

    Returns
    -------
    sum_a2 : ndarray of shape (s,), float64
    sq : float
    gW1r : ndarray of shape (s, n), float64
        sum_i [(d3 W2) * f'(z2)]_i^T x_i.
    gb1r : ndarray of shape (s,), float64
        sum_i (d3 W2) * f'(z2).
    gW2 : ndarray of shape (n, s), float64
    gb2 : ndarray of shape (n,), float64
    fpX : ndarray of shape (s, n), float64
        sum_i f'(z2_i)^T x_i.
    sum_fp : ndarray of shape (s,), float64
        sum_i f'(z2_i).
    bad : ndarray of shape (2,), int64
    """
    s, n = W1.shape
    sum_a2 = np.zeros(s, np.float64)
    gW1r = np.zeros((s, n), np.float64)
    gb1r = np.zeros(s, np.float64)
    gW2 = np.zeros((n, s), np.float64)
    gb2 = np.zeros(n, np.float64)
    fpX = np.zeros((s, n), np.float64)
    sum_fp = np.zeros(s, np.float64)
    bad = np.array([0, -1], np.int64)
    sq = 0.0
    for start in range(0, X.shape[0], block_rows):
        Xb = X[start:start + block_rows]
        rows = Xb.shape[0]
        a2 = np.empty((rows, s), X.dtype)
        stacked = np.empty((rows, 2 * s), X.dtype)
        _hidden(Xb, W1, b1, a2, stacked[:, s:], sum_a2)
        d3 = np.empty((rows, n), X.dtype)
        sq += _output_delta(Xb, a2, W2, b2, d3, gb2, row0 + start, bad)
        e2 = np.dot(d3, W2)
        for i in range(rows):
            for j in range(s):
                fp = stacked[i, s + j]
                d = e2[i, j] * fp
                stacked[i, j] = d
                gb1r[j] += d
                sum_fp[j] += fp
        gW2 += np.dot(d3.T, a2)
        both = np.dot(stacked.T, Xb)
        gW1r += both[:s]
        fpX += both[s:]
    return sum_a2, sq, gW1r, gb1r, gW2, gb2, fpX, sum_fp, bad
