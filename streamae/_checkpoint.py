"""Checkpoints: everything needed to continue a fit exactly, in one file.

A checkpoint is taken at an iteration boundary and holds

- the optimizer's full state (`OptimState`): theta (the weights), the cost and
  gradient there, the L-BFGS correction pairs s and y, the last step, the
  iteration and evaluation counters, its stop message and the numerical
  guard's rejections;
- the history so far, rho_hat at theta, the seconds spent, and the data's
  total variance (measured once, at the run's start);
- the hyperparameters and run settings that change the floating-point result
  (n_hidden, rho, beta, weight_decay, dtype, seed, optimizer, history size,
  strategy, chunking, block rows, reduction fan-in);
- the random state (the seed and the generator's state after initialisation);
- a fingerprint of the data: path, shape, dtype, chunks and a SHA-256 of the
  store's metadata documents (for in-memory arrays, of the values).

Because `_optim.step` is deterministic and transactional, continuing from a
checkpoint computes the same bits as the uninterrupted run.

Format: one uncompressed NumPy ``.npz`` file (a zip archive of ``.npy``
arrays; no pickles). ``meta`` is UTF-8 JSON stored as a uint8 array, and
carries a SHA-256 of the arrays. The file is written atomically
(`streamae._atomic.write_bytes`: a temporary file in the same directory,
fsync'ed, renamed over the old checkpoint with ``os.replace``, then the
directory fsync'ed), so a crash at any instant leaves either the old or the
new checkpoint, whole.

Default location (`default_path`): ``checkpoint.npz`` inside the model's
folder ``<out>``, so that deleting the model deletes its checkpoint and a
finished model can be extended (for an object-store URL ``<out>``, which has
no atomic rename, ``<basename>.ckpt`` in the current directory). Checkpoints
that older versions wrote beside the model (``<out>.ckpt``) are still
continued (`locate`).
"""

import datetime
import hashlib
import io
import json
import os
import zipfile

import numpy as np
import zarr

from ._atomic import remove_stale, write_bytes
from ._constants import CHECKPOINT_NAME, LEGACY_CHECKPOINT_SUFFIX
from ._errors import CheckpointError, CheckpointExistsError, ParameterError
from ._interrupt import InterruptFlag, Stop  # noqa: F401 (the fit loop's names for them)
from ._optim import OptimState
from ._validation import check_int

FORMAT = "streamae-checkpoint"
FORMAT_VERSION = 1
SUFFIX = LEGACY_CHECKPOINT_SUFFIX
_START_OVER = "start over with `overwrite=True` and `resume=False`"
_GIVE = f"give the file that `checkpoint` named, or the default OUT/{CHECKPOINT_NAME}"


def default_path(out):
    """Where a run writing the model ``out`` keeps its checkpoint: inside its folder."""
    out = os.fspath(out).rstrip("/")
    if "://" in out:
        return os.path.basename(out) + SUFFIX
    return os.path.join(out, CHECKPOINT_NAME)


def locate(out, given=None, resume=False):
    """The checkpoint of a run writing the model ``out``, and a note for the user.

    ``given`` (an explicit path) wins. Otherwise `default_path`, except that a
    resumed run whose model folder holds no checkpoint continues one that an
    older version left beside the model (``<out>.ckpt``).

    Returns
    -------
    path : str
    note : str or None
        What the user should know about an older checkpoint beside the model.
    """
    if given is not None:
        return os.fspath(given), None
    path = default_path(out)
    legacy = os.fspath(out).rstrip("/") + SUFFIX
    if "://" in os.fspath(out) or os.path.lexists(path) or not os.path.isfile(legacy):
        return path, None
    if resume:
        return legacy, f"continuing the checkpoint '{legacy}' (beside the model, where " \
                       "earlier versions kept it)"
    return path, (f"'{legacy}' (a checkpoint beside the model, where earlier versions kept "
                  f"it) is not used: this run's checkpoint is '{path}'; to continue that "
                  "run instead, add `resume=True`")


# ---------------------------------------------------------------- identity

def data_fingerprint(data, dataset, storage_options=None):
    """What identifies the training data: path, shape, dtype, chunks, checksum.

    Parameters
    ----------
    data : the ``data`` argument of ``fit``
    dataset : Dataset
        ``data`` opened by `open_dataset`.

    Returns
    -------
    dict of plain JSON values
    """
    fp = {"source": dataset.source, "shape": list(dataset.shape),
          "dtype": str(dataset.array.dtype)}
    array = None
    if isinstance(data, (str, os.PathLike)):
        path = os.fspath(data)
        fp["path"] = path if "://" in path else os.path.abspath(path)
        fp["metadata_sha256"] = _sha256(_metadata_documents(path, storage_options))
        kwargs = {"storage_options": storage_options} if "://" in path and storage_options \
            else {}
        array = zarr.open_array(path, mode="r", **kwargs)
    elif isinstance(data, zarr.Array):
        array = data
        fp["path"] = str(data.store_path)
        fp["metadata_sha256"] = _sha256(
            json.dumps(data.metadata.to_dict(), sort_keys=True, default=str).encode())
    elif not hasattr(data, "dask"):
        fp["content_sha256"] = _sha256(np.ascontiguousarray(np.asarray(data)).view(np.uint8))
    if array is not None:
        fp["chunks"] = list(array.chunks)
        fp["shards"] = list(array.shards) if getattr(array, "shards", None) else None
    return fp


def _metadata_documents(path, storage_options=None):
    """The raw bytes of a Zarr array's metadata documents (v3 or v2)."""
    names = ("zarr.json", ".zarray", ".zattrs")
    out = b""
    if "://" in path:
        import fsspec

        fs, root = fsspec.core.url_to_fs(path, **(storage_options or {}))
        for name in names:
            key = root.rstrip("/") + "/" + name
            if fs.exists(key):
                out += name.encode() + b"\0" + fs.cat_file(key) + b"\0"
        return out
    for name in names:
        full = os.path.join(path, name)
        if os.path.exists(full):
            with open(full, "rb") as f:
                out += name.encode() + b"\0" + f.read() + b"\0"
    return out


def _sha256(data):
    return hashlib.sha256(data).hexdigest()


def identity(model, dataset_fingerprint, run):
    """The parts of a checkpoint that a resumed run must match.

    Returns
    -------
    dict with ``model`` (hyperparameters), ``run`` (settings that change the
    floating-point result) and ``data`` (the fingerprint)
    """
    return {"model": model, "run": run, "data": dataset_fingerprint}


_LABELS = {"n_visible": "n_visible (data columns)", "chunk_rows": "rows per task",
           "metadata_sha256": "store metadata checksum", "content_sha256": "values checksum"}


_ORDER = ("path", "shape", "dtype", "chunks", "shards", "metadata_sha256", "content_sha256",
          "n_visible", "n_hidden", "rho", "beta", "weight_decay", "seed", "optimizer",
          "strategy")


def differences(saved, current):
    """Human-readable list of the fields where ``saved`` and ``current`` differ."""
    out = []
    keys = set(saved) | set(current)
    for key in [k for k in _ORDER if k in keys] + sorted(keys - set(_ORDER)):
        if key == "source":
            continue
        a, b = saved.get(key), current.get(key)
        if a != b:
            if key.endswith("sha256") and a and b:
                a, b = a[:12], b[:12]
            out.append(f"{_LABELS.get(key, key)} {_show(a)} now {_show(b)}")
    return out


def _show(value):
    if isinstance(value, list):
        return "(" + ", ".join(str(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    return "none" if value is None else str(value)


def check_matches(path, meta, expected):
    """Raise `CheckpointError` naming what differs between a checkpoint and this run."""
    for part, what, fix in (
            ("data", "for other data", "resume with the same data"),
            ("model", "with other hyperparameters", "resume with the same options"),
            ("run", "with other run settings", "resume with the same options")):
        diff = differences(meta.get(part, {}), expected[part])
        if diff:
            raise CheckpointError(
                f"checkpoint '{path}' was written {what}: {'; '.join(diff)}; {fix}, "
                f"or {_START_OVER}")


# ---------------------------------------------------------------- reading and writing

class Saved:
    """A checkpoint read back: ``state`` (OptimState), ``meta`` (dict), ``rho_hat``,
    and ``arrays``: the other named arrays the run stored (`Checkpointer.save`)."""

    def __init__(self, state, meta, rho_hat, arrays=None):
        self.state, self.meta, self.rho_hat = state, meta, rho_hat
        self.arrays = arrays or {}

    @property
    def history(self):
        return list(self.meta.get("history", []))

    @property
    def elapsed(self):
        return float(self.meta.get("elapsed", 0.0))

    @property
    def data_variance(self):
        """The data's total variance measured at the run's start (None in checkpoints
        written before it was kept)."""
        value = self.meta.get("statistics", {}).get("data_variance")
        return None if value is None else float(value)


def holds(path, theta):
    """True if the checkpoint at ``path`` holds exactly the weights ``theta`` (a
    model written from its state); False if it is missing, unreadable or other."""
    try:
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as z:
            # With early stopping the model holds the best check's weights.
            saved = z["best_theta"] if "best_theta" in z.files else z["theta"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return False
    theta = np.asarray(theta, np.float64)
    return saved.shape == theta.shape and saved.tobytes() == theta.tobytes()


def finished(state, max_iter):
    """True if a run in ``state`` has nothing left to do with ``max_iter`` iterations."""
    if state.phase != "full":  # the warm-up's end is the full phase's start
        return False
    return bool(state.message) or state.iteration >= max_iter


def _arrays(state, rho_hat):
    p = state.theta.size
    k = len(state.s_hist)
    return {
        "theta": np.asarray(state.theta, np.float64),
        "grad": np.asarray(state.grad, np.float64),
        "scalars": np.array([state.cost, state.step], np.float64),
        "s_hist": np.asarray(state.s_hist, np.float64).reshape(k, p),
        "y_hist": np.asarray(state.y_hist, np.float64).reshape(k, p),
        "rho_hat": np.asarray(rho_hat, np.float64),
    }


def _digest(arrays):
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{a.dtype.str}:{a.shape}".encode())
        h.update(a.view(np.uint8).tobytes())
    return h.hexdigest()


def _plain(value):
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def encode(state, rho_hat, meta, extra=None):
    """The bytes of a checkpoint file; ``extra``: more named float64 arrays to store."""
    from . import __version__

    arrays = {**{k: np.asarray(v, np.float64) for k, v in (extra or {}).items()},
              **_arrays(state, rho_hat)}
    meta = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "streamae_version": __version__,
        "written": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **meta,
        "iteration": state.iteration, "evaluations": state.evaluations,
        "message": state.message, "rejections": state.rejections, "phase": state.phase,
        "sha256": _digest(arrays),
    }
    text = json.dumps(meta, default=_plain, allow_nan=True).encode()
    buffer = io.BytesIO()
    np.savez(buffer, meta=np.frombuffer(text, np.uint8), **arrays)
    return buffer.getvalue()


def read(path):
    """Read and verify the checkpoint at ``path``.

    Returns
    -------
    Saved

    Raises
    ------
    CheckpointError
        Missing, not a checkpoint, another format version, truncated or damaged.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"no checkpoint at '{path}': the path does not exist")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"PK\x03\x04":
        raise CheckpointError(
            f"'{path}' is not a streamae checkpoint (not an .npz file); {_GIVE}")
    damaged = (f"checkpoint '{path}' is damaged or truncated; restore a good copy, or "
               f"{_START_OVER}")
    not_ours = CheckpointError(
        f"'{path}' is not a streamae checkpoint (no '{FORMAT}' format); {_GIVE}")
    try:
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as z:
            arrays = {name: z[name] for name in z.files}
        meta = json.loads(arrays.pop("meta").tobytes()) if "meta" in arrays else None
    except (zipfile.BadZipFile, ValueError, EOFError, KeyError, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno is not None:
            raise  # permission denied etc.: the OS error says it best
        raise CheckpointError(damaged) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise not_ours
    if meta.get("format_version") != FORMAT_VERSION:
        from . import __version__

        raise CheckpointError(
            f"checkpoint '{path}' has format version {meta.get('format_version')}, this "
            f"streamae ({__version__}) reads version {FORMAT_VERSION}; finish that run with "
            f"the streamae version that wrote it, or {_START_OVER}")
    names = ("theta", "grad", "scalars", "s_hist", "y_hist", "rho_hat")
    if any(n not in arrays for n in names) or _digest(arrays) != meta.get("sha256"):
        raise CheckpointError(damaged)
    cost, step = (float(v) for v in arrays["scalars"])
    state = OptimState(
        theta=arrays["theta"], cost=cost, grad=arrays["grad"],
        iteration=int(meta["iteration"]), evaluations=int(meta["evaluations"]), step=step,
        s_hist=list(arrays["s_hist"]), y_hist=list(arrays["y_hist"]),
        message=meta.get("message", ""), rejections=list(meta.get("rejections", [])),
        phase=meta.get("phase", "full"))
    others = {k: v for k, v in arrays.items() if k not in names}
    return Saved(state, meta, arrays["rho_hat"], others)


class Checkpointer:
    """Writes a run's checkpoints at ``path`` every ``every`` iterations.

    Parameters
    ----------
    path : str
    every : int
        Iterations between checkpoints; 0 writes only on interrupts.
    expected : dict
        `identity` of this run, stored in every checkpoint and compared on resume.
    extra : dict
        Other plain JSON to store (the random state).
    """

    def __init__(self, path, every, expected, extra=None):
        self.path = os.fspath(path)
        self.every = int(every)
        self.expected = expected
        self.extra = extra or {}
        self.last = None  # (phase, iteration, message) of the checkpoint on disk, if ours

    def open(self, resume, overwrite):
        """Read the checkpoint to resume from (or None), refusing one that does not match.

        Without ``resume``, an existing checkpoint is refused unless ``overwrite``.
        """
        exists = os.path.lexists(self.path)
        if exists and not resume and not overwrite:
            raise CheckpointExistsError(
                f"checkpoint '{self.path}' already exists; continue that run with "
                "`resume=True`, or start over with `overwrite=True`")
        saved = None
        if resume and exists:
            saved = read(self.path)
            check_matches(self.path, saved.meta, self.expected)
            self.last = (saved.state.phase, saved.state.iteration, saved.state.message)
            if saved.data_variance is not None:
                self.keep(data_variance=saved.data_variance)
        remove_stale(self.path)
        return saved

    def keep(self, **statistics):
        """Store ``statistics`` of the data (plain floats) in every later checkpoint, so
        that a resumed run does not measure them again."""
        self.extra = {**self.extra, "statistics": {**self.extra.get("statistics", {}),
                                                   **statistics}}

    def due(self, state):
        return self.every > 0 and state.iteration % self.every == 0

    def save(self, state, rho_hat, history, elapsed, arrays=None):
        """Write a checkpoint of ``state`` (skipped if the file on disk already holds it);
        ``arrays``: more named arrays to keep (read back in `Saved.arrays`)."""
        if self.last == (state.phase, state.iteration, state.message):
            return self.path
        meta = {**self.expected, **self.extra, "history": history, "elapsed": elapsed}
        try:
            write_bytes(self.path, encode(state, rho_hat, meta, arrays), "checkpoint")
        except OSError as exc:
            if self.last is not None:
                kept = f"the previous checkpoint (iteration {self.last[1]}) is intact"
            elif os.path.lexists(self.path):
                kept = "the existing checkpoint is intact"
            else:
                kept = "no checkpoint was written"
            raise CheckpointError(
                f"cannot write checkpoint '{self.path}' "
                f"({getattr(exc, 'reason', None) or exc.strerror or exc}); {kept}") \
                from exc
        self.last = (state.phase, state.iteration, state.message)
        return self.path


def require_path(checkpoint, checkpoint_every, resume):
    """Validate the checkpoint options of ``fit``."""
    check_int("checkpoint_every", checkpoint_every, 0)
    if checkpoint is None and (checkpoint_every or resume):
        raise ParameterError(
            "checkpoint_every and resume need a checkpoint path: pass checkpoint='run.ckpt'")
