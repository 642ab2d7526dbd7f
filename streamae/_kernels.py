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

With the linear decoder (``linear=True``) the output layer is the identity:
a3 = z3 and d3 = a3 - X; everything else is unchanged. The flag is a plain
boolean argument, constant during a call, so each kernel has one code path
and the branch in the element-wise loop is hoisted out of it by LLVM.

Each kernel also counts the values of X the decoder refuses (outside [0, 1]
for the sigmoid decoder, NaN and Inf included; NaN and Inf for the linear
one) and the first row where one occurs, so validation costs no extra pass
over the data.

Speed notes (see docs/benchmarks.md for the measurements):

- Buffers for one block (z2/a2, z3/d3, d3 W2, the products' outputs) are
  allocated once per chunk and reused by every block; the products write
  into them (``np.dot(a, b, out)``), so the element-wise passes work in
  place and no (rows x n) temporary exists beyond the products' own outputs.
- The sigmoid uses an exp written with plain arithmetic (Cody-Waite range
  reduction, a polynomial, and the exponent built with bit operations), so
  that LLVM vectorises the element-wise loops; ``math.exp`` is a scalar libm
  call. Accuracy: about 1 ulp (float32 within 1e-7 relative, float64 within
  3e-16 relative of NumPy's exp); saturation as NumPy's sigmoid (the
  argument is clamped where exp would overflow, changing the sigmoid by less
  than the smallest normal number).
- Sums are accumulated per column (a float64 vector), never in one scalar:
  a scalar float64 running sum is a serial dependency that keeps LLVM from
  vectorising the loop (it may not reorder floating-point additions).
  Per-column partial sums are added up in a fixed order, so results are
  deterministic.
"""

import numpy as np
from llvmlite import ir
from numba import literal_unroll, njit, types
from numba.extending import intrinsic, overload

# "contract" lets LLVM fuse a * b + c into FMA instructions (one rounding
# instead of two); no other fast-math licence: NaN and Inf must behave as
# IEEE says, since the kernels detect bad data with comparisons.
_NJIT = dict(nogil=True, cache=True, error_model="numpy", boundscheck=False,
             fastmath={"contract"})


# ----------------------------------------------------------------- exp and sigmoid

@intrinsic
def _float_bits(typingctx, x):
    """The bits of a float32 (float64) as an int32 (int64)."""
    if x == types.float32:
        out, lltype = types.int32, ir.IntType(32)
    elif x == types.float64:
        out, lltype = types.int64, ir.IntType(64)
    else:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], lltype)

    return out(x), codegen


@intrinsic
def _bits_float(typingctx, x):
    """The float32 (float64) whose bits are an int32 (int64)."""
    if x == types.int32:
        out, lltype = types.float32, ir.FloatType()
    elif x == types.int64:
        out, lltype = types.float64, ir.DoubleType()
    else:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], lltype)

    return out(x), codegen


def _sigmoid(z):
    """1 / (1 + exp(-z)) in the dtype of ``z`` (implemented by the overload below)."""
    return 1.0 / (1.0 + np.exp(-z))


def _sigmoid_f32():
    f = np.float32
    lo, hi = f(-87.0), f(88.0)  # exp(t) stays a normal float32 for t in [lo, hi]
    log2e, magic = f(1.4426950408889634), f(12582912.0)  # magic = 1.5 * 2**23
    magic_bits = np.int32(0x4B400000)
    ln2_hi, ln2_lo = f(0.693359375), f(-2.12194440e-4)
    # Cephes expf: exp(r) = 1 + r + r^2 P(r) on |r| <= ln(2)/2
    p0, p1, p2 = f(1.9875691500e-4), f(1.3981999507e-3), f(8.3334519073e-3)
    p3, p4, p5 = f(4.1665795894e-2), f(1.6666665459e-1), f(5.0000001201e-1)
    one = f(1.0)

    def impl(z):
        t = -z
        if t > hi:  # comparisons written so that NaN passes through
            t = hi
        if t < lo:
            t = lo
        v = t * log2e + magic  # round(t / ln 2) in the low mantissa bits
        k = v - magic
        r = t - k * ln2_hi
        r = r - k * ln2_lo
        p = ((((p0 * r + p1) * r + p2) * r + p3) * r + p4) * r + p5
        p = p * (r * r) + r + one
        scale = _bits_float(np.int32((_float_bits(v) - magic_bits + 127) << 23))
        return one / (one + p * scale)

    return impl


def _sigmoid_f64():
    lo, hi = -708.0, 709.0
    log2e, magic = 1.4426950408889634, 6755399441055744.0  # magic = 1.5 * 2**52
    magic_bits = np.int64(0x4338000000000000)
    ln2_hi, ln2_lo = 6.93147180369123816490e-01, 1.90821492927058770002e-10
    # Taylor coefficients 1/k!, k = 2..13: truncation below 1e-17 on |r| <= ln(2)/2
    c2, c3, c4, c5 = 1 / 2, 1 / 6, 1 / 24, 1 / 120
    c6, c7, c8, c9 = 1 / 720, 1 / 5040, 1 / 40320, 1 / 362880
    c10, c11, c12, c13 = 1 / 3628800, 1 / 39916800, 1 / 479001600, 1 / 6227020800

    def impl(z):
        t = -z
        if t > hi:
            t = hi
        if t < lo:
            t = lo
        v = t * log2e + magic
        k = v - magic
        r = (t - k * ln2_hi) - k * ln2_lo
        p = (((((c13 * r + c12) * r + c11) * r + c10) * r + c9) * r + c8) * r + c7
        p = (((((p * r + c6) * r + c5) * r + c4) * r + c3) * r + c2) * r + 1.0
        p = p * r + 1.0
        scale = _bits_float(np.int64((_float_bits(v) - magic_bits + 1023) << 52))
        return 1.0 / (1.0 + p * scale)

    return impl


@overload(_sigmoid, jit_options=dict(fastmath={"contract"}))
def _sigmoid_overload(z):
    if z == types.float32:
        return _sigmoid_f32()
    if z == types.float64:
        return _sigmoid_f64()
    return None


# ----------------------------------------------------------------- block helpers

@njit(**_NJIT)
def _activate_hidden(a2, b1, sum_a2):
    """a2 <- f(a2 + b1) in place (a2 holds z2 without bias); column sums into sum_a2."""
    s = a2.shape[1]
    for i in range(a2.shape[0]):
        for j in range(s):
            a = _sigmoid(a2[i, j] + b1[j])
            a2[i, j] = a
            sum_a2[j] += a


@njit(**_NJIT)
def _is_bad(x, linear):
    """True if ``x`` is not a value the decoder accepts.

    Sigmoid decoder: outside [0, 1] (NaN fails both comparisons). Linear
    decoder: NaN or Inf (``x - x`` is 0 only for finite ``x``).
    """
    if linear:
        return not (x - x == 0)
    return not ((x >= 0) & (x <= 1))


@njit(**_NJIT)
def _output_unit(z, x, one, linear):
    """(a3 - x, d3) for one output unit with pre-activation ``z`` and target ``x``.

    Sigmoid decoder: a3 = f(z), d3 = (a3 - x) a3 (1 - a3).
    Linear decoder:  a3 = z,    d3 = a3 - x.
    ``linear`` is the same for a whole kernel call, so the branch is hoisted
    out of the loops that call this (loop unswitching).
    """
    if linear:
        diff = z - x
        return diff, diff
    a = _sigmoid(z)
    diff = a - x
    return diff, diff * a * (one - a)


@njit(**_NJIT)
def _activate_output(Xb, d3, b2, gb2, sqc, linear):
    """d3 <- the output delta in place (d3 holds z3 without bias); see `_output_unit`.

    Adds column sums of d3 to ``gb2`` and of (a3 - x)^2 to ``sqc`` (both
    float64). Returns how many values of Xb the decoder refuses (`_is_bad`).
    """
    one = np.ones_like(b2[:1])[0]
    n = d3.shape[1]
    nbad = 0
    for i in range(d3.shape[0]):
        for k in range(n):
            x = Xb[i, k]
            if _is_bad(x, linear):
                nbad += 1
            diff, d = _output_unit(d3[i, k] + b2[k], x, one, linear)
            sqc[k] += diff * diff
            d3[i, k] = d
            gb2[k] += d
    return nbad


@njit(**_NJIT)
def _note_bad(Xb, nbad, row0, bad, linear):
    """Add a block's count of bad values to ``bad``; find the first bad row if new."""
    if nbad == 0:
        return
    if bad[0] == 0:
        for i in range(Xb.shape[0]):
            found = False
            for k in range(Xb.shape[1]):
                if _is_bad(Xb[i, k], linear):
                    found = True
                    break
            if found:
                bad[1] = row0 + i
                break
    bad[0] += nbad


@njit(**_NJIT)
def _add_to(acc, part):
    """acc += part (float64 accumulator, any-dtype part of the same shape)."""
    for i in range(acc.shape[0]):
        for j in range(acc.shape[1]):
            acc[i, j] += part[i, j]


@njit(**_NJIT)
def _add_rows_to(acc, part, start):
    """acc += part[start:start + acc.shape[0]]."""
    for i in range(acc.shape[0]):
        for j in range(acc.shape[1]):
            acc[i, j] += part[start + i, j]


@njit(**_NJIT)
def _sparse_delta(e2, a2, c, gb1):
    """e2 <- (e2 + c) * a2 (1 - a2) in place; column sums into gb1."""
    one = np.ones_like(c[:1])[0]
    s = e2.shape[1]
    for i in range(e2.shape[0]):
        for j in range(s):
            a = a2[i, j]
            d = (e2[i, j] + c[j]) * (a * (one - a))
            e2[i, j] = d
            gb1[j] += d


@njit(**_NJIT)
def _forward(Xb, W1, b1, a2, sum_a2):
    """a2 <- f(Xb W1^T + b1) (the block's buffer); column sums of a2 into ``sum_a2``."""
    np.dot(Xb, W1.T, a2)
    _activate_hidden(a2, b1, sum_a2)


@njit(**_NJIT)
def _decode(Xb, a2, W2, b2, d3, e2, gb2, sqc, bad, row0, linear):
    """The output layer and the error sent back, for one block (shared by every
    backprop kernel): d3 <- the output delta (`_activate_output`), e2 <- d3 W2;
    column sums of d3 into ``gb2`` and of the squared errors into ``sqc``; the
    block's bad values noted in ``bad`` (first row ``row0``)."""
    np.dot(a2, W2.T, d3)
    nbad = _activate_output(Xb, d3, b2, gb2, sqc, linear)
    _note_bad(Xb, nbad, row0, bad, linear)
    np.dot(d3, W2, e2)


@njit(**_NJIT)
def _add_product(acc, A, B, buf):
    """acc += A^T B (float64 ``acc``; the product in ``buf``, in the blocks' dtype)."""
    np.dot(A.T, B, buf)
    _add_to(acc, buf)


# ----------------------------------------------------------------- public kernels

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
    m = X.shape[0]
    s = W1.shape[0]
    br = max(1, min(block_rows, m))
    sum_a2 = np.zeros(s, np.float64)
    a2buf = np.empty((br, s), X.dtype)
    for start in range(0, m, br):
        rows = min(br, m - start)
        _forward(X[start:start + rows], W1, b1, a2buf[:rows], sum_a2)
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
    m = X.shape[0]
    s = W1.shape[0]
    br = max(1, min(block_rows, m))
    sum_a2 = np.zeros(s, np.float64)
    a2 = np.empty((m, s), X.dtype)
    for start in range(0, m, br):
        stop = min(start + br, m)
        _forward(X[start:stop], W1, b1, a2[start:stop], sum_a2)
    return a2, sum_a2


@njit(**_NJIT)
def _backprop_chunk(X, A2, W1, b1, W2, b2, c, row0, block_rows, forward, linear):
    """Shared body of `backprop_sums` (forward=True) and `backprop_sums_cached`."""
    m, n = X.shape
    s = W2.shape[1]
    br = max(1, min(block_rows, m))
    gW1 = np.zeros((s, n), np.float64)
    gb1 = np.zeros(s, np.float64)
    gW2 = np.zeros((n, s), np.float64)
    gb2 = np.zeros(n, np.float64)
    sqc = np.zeros(n, np.float64)
    bad = np.array([0, -1], np.int64)
    dummy = np.zeros(s, np.float64)
    a2buf = np.empty((br, s), X.dtype)
    d3buf = np.empty((br, n), X.dtype)
    e2buf = np.empty((br, s), X.dtype)
    pW1 = np.empty((s, n), X.dtype)
    pW2 = np.empty((n, s), X.dtype)
    for start in range(0, m, br):
        rows = min(br, m - start)
        Xb = X[start:start + rows]
        if forward:
            a2 = a2buf[:rows]
            _forward(Xb, W1, b1, a2, dummy)
        else:
            a2 = A2[start:start + rows]
        d3, e2 = d3buf[:rows], e2buf[:rows]
        _decode(Xb, a2, W2, b2, d3, e2, gb2, sqc, bad, row0 + start, linear)
        _sparse_delta(e2, a2, c, gb1)
        _add_product(gW2, d3, a2, pW2)
        _add_product(gW1, e2, Xb, pW1)
    return sqc.sum(), gW1, gb1, gW2, gb2, bad


@njit(**_NJIT)
def backprop_sums(X, W1, b1, W2, b2, c, row0, block_rows, linear=False):
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
    linear : bool, default False
        Linear decoder (a3 = z3, d3 = a3 - x) instead of the sigmoid.

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
        [values the decoder refuses, first such global row or -1].
    """
    empty = np.empty((0, W1.shape[0]), X.dtype)
    return _backprop_chunk(X, empty, W1, b1, W2, b2, c, row0, block_rows, True, linear)


@njit(**_NJIT)
def backprop_sums_cached(X, A2, W2, b2, c, row0, block_rows, linear=False):
    """Pass 2 of the cached strategy: like `backprop_sums`, reusing a2.

    Parameters
    ----------
    X : ndarray of shape (m, n)
    A2 : ndarray of shape (m, s)
        Hidden activations kept from the first pass.
    W2, b2, c, row0, block_rows, linear
        As in `backprop_sums`.

    Returns
    -------
    Same as `backprop_sums`.
    """
    n, s = W2.shape
    W1 = np.empty((s, n), X.dtype)  # unused: no forward pass
    b1 = np.empty(s, X.dtype)
    return _backprop_chunk(X, A2, W1, b1, W2, b2, c, row0, block_rows, False, linear)


@njit(**_NJIT)
def _stack_hidden_deltas(a2, e2, stacked, gb1r, sum_fp, one):
    """Row i of ``stacked`` (rows, 2s) becomes ``[e2_i * f'(z2_i) | f'(z2_i)]``
    with f'(z2) = a2 (``one`` - a2), ``one`` of the weights' dtype; their
    column sums are added to ``gb1r`` and ``sum_fp`` (float64)."""
    rows, s = a2.shape
    for i in range(rows):
        for j in range(s):
            a = a2[i, j]
            fp = a * (one - a)
            d = e2[i, j] * fp
            stacked[i, j] = d
            stacked[i, s + j] = fp
            gb1r[j] += d
            sum_fp[j] += fp


@njit(**_NJIT)
def _one_pass_zeros(s, n):
    """`one_pass_sums`' float64 accumulators, zeroed: sum_a2, gW1r, gb1r, gW2,
    gb2, fpX, sum_fp and the per-column squares."""
    return (np.zeros(s, np.float64), np.zeros((s, n), np.float64), np.zeros(s, np.float64),
            np.zeros((n, s), np.float64), np.zeros(n, np.float64), np.zeros((s, n), np.float64),
            np.zeros(s, np.float64), np.zeros(n, np.float64))


@njit(**_NJIT)
def one_pass_sums(X, W1, b1, W2, b2, row0, block_rows, linear=False):
    """Everything an evaluation needs, in one read of the chunk.

    d2 splits as ``(d3 W2) * f'(z2) + c * f'(z2)``; c depends only on rho_hat,
    so the chunk returns the c-free part and the sums that c multiplies::

        gW1 = sum_i [(d3 W2) * f'(z2)]_i^T x_i + diag(c) sum_i f'(z2_i)^T x_i

    Both products share X, so they are done as one GEMM of the stacked
    (rows, 2s) matrix ``[(d3 W2) * f'(z2) | f'(z2)]``. With ``linear`` the
    output delta is d3 = a3 - x, a3 = z3; the split of d2 is the same.

    Parameters
    ----------
    X : ndarray of shape (m, n)
    W1, b1, W2, b2 : ndarrays of shapes (s, n), (s,), (n, s), (n,)
    row0, block_rows, linear
        As in `backprop_sums`.

    Returns
    -------
    sum_a2 : ndarray of shape (s,), float64
    sq : float
    gW1r : ndarray of shape (s, n), float64
        sum_i [(d3 W2) * f'(z2)]_i^T x_i.
    gb1r : ndarray of shape (s,), float64
        sum_i (d3 W2) * f'(z2).
    gW2, gb2 : ndarrays of shapes (n, s), (n,), float64
    fpX : ndarray of shape (s, n), float64
        sum_i f'(z2_i)^T x_i.
    sum_fp : ndarray of shape (s,), float64
        sum_i f'(z2_i).
    bad : ndarray of shape (2,), int64
    """
    m = X.shape[0]
    s, n = W1.shape
    br = max(1, min(block_rows, m))
    one = np.ones_like(b1[:1])[0]
    sum_a2, gW1r, gb1r, gW2, gb2, fpX, sum_fp, sqc = _one_pass_zeros(s, n)
    bad = np.array([0, -1], np.int64)
    a2buf = np.empty((br, s), X.dtype)
    d3buf = np.empty((br, n), X.dtype)
    e2buf = np.empty((br, s), X.dtype)
    stackbuf = np.empty((br, 2 * s), X.dtype)
    pW2 = np.empty((n, s), X.dtype)
    both = np.empty((2 * s, n), X.dtype)
    for start in range(0, m, br):
        rows = min(br, m - start)
        Xb = X[start:start + rows]
        a2 = a2buf[:rows]
        _forward(Xb, W1, b1, a2, sum_a2)
        d3, e2 = d3buf[:rows], e2buf[:rows]
        _decode(Xb, a2, W2, b2, d3, e2, gb2, sqc, bad, row0 + start, linear)
        stacked = stackbuf[:rows]
        _stack_hidden_deltas(a2, e2, stacked, gb1r, sum_fp, one)
        _add_product(gW2, d3, a2, pW2)
        np.dot(stacked.T, Xb, both)
        _add_rows_to(gW1r, both, 0)
        _add_rows_to(fpX, both, s)
    return sum_a2, sqc.sum(), gW1r, gb1r, gW2, gb2, fpX, sum_fp, bad


# ----------------------------------------------------------------- kernels over runs of batches
# One call per read of consecutive batches (rows X[offsets[k]:offsets[k + 1]]
# for batch k): each batch's partial sums, exactly those of one call of the
# kernel above on that batch, packed into row k of ``parts`` (float64), so
# that the per-batch cost of a call from Python (argument checks, boxing
# the results) leaves the loop. The bad-value records go in ``bads[k]``.

@njit(**_NJIT)
def _put(row, at, values):
    """row[at:at + values.size] = values (any shape, C order); the next position."""
    flat = values.ravel()
    for i in range(flat.size):
        row[at + i] = flat[i]
    return at + flat.size


@njit(**_NJIT)
def hidden_sum_batches(X, offsets, W1, b1, block_rows):
    """`hidden_sum` of each batch: parts of shape (batches, s)."""
    parts = np.empty((offsets.shape[0] - 1, W1.shape[0]), np.float64)
    for k in range(offsets.shape[0] - 1):
        _put(parts[k], 0, hidden_sum(X[offsets[k]:offsets[k + 1]], W1, b1, block_rows))
    return parts


@njit(**_NJIT)
def _pack(row, values):
    """Each array (or scalar) of the tuple ``values``, in order, into ``row``."""
    at = 0
    for v in literal_unroll(values):
        at = _put(row, at, np.asarray(v))


@njit(**_NJIT)
def backprop_batches(X, offsets, W1, b1, W2, b2, c, row0, block_rows, linear):
    """`backprop_sums` of each batch: parts (batches, 1 + 2 s n + s + n) packed as
    [sq, gW1, gb1, gW2, gb2], and bads (batches, 2)."""
    s, n = W1.shape
    parts = np.empty((offsets.shape[0] - 1, 1 + 2 * s * n + s + n), np.float64)
    bads = np.empty((offsets.shape[0] - 1, 2), np.int64)
    for k in range(offsets.shape[0] - 1):
        sums = backprop_sums(X[offsets[k]:offsets[k + 1]], W1, b1, W2, b2, c,
                             row0 + offsets[k], block_rows, linear)
        _pack(parts[k], sums[:5])
        bads[k] = sums[5]
    return parts, bads


@njit(**_NJIT)
def one_pass_batches(X, offsets, W1, b1, W2, b2, row0, block_rows, linear):
    """`one_pass_sums` of each batch: parts (batches, 1 + 3 s n + 3 s + n) packed
    as [sum_a2, sq, gW1r, gb1r, gW2, gb2, fpX, sum_fp], and bads (batches, 2)."""
    s, n = W1.shape
    parts = np.empty((offsets.shape[0] - 1, 1 + 3 * s * n + 3 * s + n), np.float64)
    bads = np.empty((offsets.shape[0] - 1, 2), np.int64)
    for k in range(offsets.shape[0] - 1):
        sums = one_pass_sums(X[offsets[k]:offsets[k + 1]], W1, b1, W2, b2,
                             row0 + offsets[k], block_rows, linear)
        _pack(parts[k], sums[:8])
        bads[k] = sums[8]
    return parts, bads


@njit(**_NJIT)
def _column_means(X):
    """Column means of ``X`` (m, n) in float64, summed row by row (zeros if m is 0)."""
    m, n = X.shape
    mean = np.zeros(n, np.float64)
    for i in range(m):
        for j in range(n):
            mean[j] += X[i, j]
    mean /= max(m, 1)
    return mean


@njit(**_NJIT)
def column_moments(X):
    """Per-column mean and centred sum of squares of a chunk, in float64.

    Two sweeps over the chunk (the mean, then the squares about it), so no
    precision is lost to cancellation. NaN and Inf make the results
    non-finite (the evaluation that follows names them).

    Parameters
    ----------
    X : ndarray of shape (m, n), any float or integer dtype

    Returns
    -------
    mean : ndarray of shape (n,), float64
    m2 : ndarray of shape (n,), float64
        sum_i (x_ij - mean_j)^2.
    """
    m, n = X.shape
    mean = _column_means(X)
    m2 = np.zeros(n, np.float64)
    for i in range(m):
        for j in range(n):
            d = X[i, j] - mean[j]
            m2[j] += d * d
    return mean, m2


@njit(**_NJIT)
def shifted_sums(X, shift, s1, s2):
    """s1 += sum_i (x_i - shift), s2 += sum_i (x_i - shift)^2, in float64, row by row.

    Rows are added in order with one accumulator per column, so the sums of
    consecutive rows have the same bits however the rows are split between
    calls. About a shift near the mean (a row of the data), the centred sum
    of squares ``s2 - s1^2 / m`` loses little to cancellation.

    Parameters
    ----------
    X : ndarray of shape (m, n), any float or integer dtype
    shift : ndarray of shape (n,), float64
    s1, s2 : ndarrays of shape (n,), float64
        Updated in place.
    """
    for i in range(X.shape[0]):
        for j in range(X.shape[1]):
            d = X[i, j] - shift[j]
            s1[j] += d
            s2[j] += d * d


@njit(**_NJIT)
def _centred_block(X, start, rows, mean, buf):
    """buf[:rows] <- X[start:start + rows] - mean, in float64; returns that view."""
    B = buf[:rows]
    for i in range(rows):
        for j in range(X.shape[1]):
            B[i, j] = X[start + i, j] - mean[j]
    return B


@njit(**_NJIT)
def centred_scatter(X, block_rows):
    """Row count, column means and centred scatter matrix of a chunk, in float64.

    Two sweeps over the chunk: the means, then, block by block, the product
    of the centred block with itself::

        mean = (1/m) sum_i x_i
        C    = sum_i (x_i - mean)^T (x_i - mean)  =  (X - 1 mean)^T (X - 1 mean)

    Centring before the product keeps the precision that the textbook form
    X^T X - m mean^T mean loses to cancellation when the means are large
    beside the spread. Chunks merge exactly with `streamae._tree.merge_moments`.
    NaN and Inf make the results non-finite.

    Parameters
    ----------
    X : ndarray of shape (m, n), any float or integer dtype
    block_rows : int
        Rows centred (in a float64 buffer) and multiplied at a time.

    Returns
    -------
    count : int
    mean : ndarray of shape (n,), float64
    C : ndarray of shape (n, n), float64
    """
    m, n = X.shape
    mean = _column_means(X)
    C = np.zeros((n, n), np.float64)
    br = max(1, min(block_rows, m))
    buf = np.empty((br, n), np.float64)
    part = np.empty((n, n), np.float64)
    for start in range(0, m, br):
        B = _centred_block(X, start, min(br, m - start), mean, buf)
        np.dot(B.T, B, part)
        _add_to(C, part)
    return m, mean, C


@njit(**_NJIT)
def whiten_rows(X, mean, MT, out, block_rows):
    """out <- (X - mean) M^T, computed in float64 a block at a time.

    Parameters
    ----------
    X : ndarray of shape (m, n), any float or integer dtype
    mean : ndarray of shape (n,), float64
    MT : ndarray of shape (n, K), float64, C-contiguous
        The whitening matrix M (K, n), transposed.
    out : ndarray of shape (m, K), float32 or float64
        Receives the whitened rows (rounded to its dtype).
    block_rows : int
        Rows centred (in a float64 buffer) and multiplied at a time.
    """
    m, n = X.shape
    k = MT.shape[1]
    br = max(1, min(block_rows, m))
    buf = np.empty((br, n), np.float64)
    res = np.empty((br, k), np.float64)
    for start in range(0, m, br):
        rows = min(br, m - start)
        R = res[:rows]
        np.dot(_centred_block(X, start, rows, mean, buf), MT, R)
        for i in range(rows):
            for j in range(k):
                out[start + i, j] = R[i, j]
