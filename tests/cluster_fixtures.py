"""Real clusters and a real S3 server for the tests, on 127.0.0.1 only.

- `local_cluster`: a ``distributed.LocalCluster`` of single-threaded worker
  processes (nannies), with a client; both closed on exit.
- `SubprocessCluster`: ``dask scheduler`` and ``dask worker`` launched as
  subprocesses of this test process (each in its own session), killed on
  exit, including the worker processes their nannies started.
- `MotoServer`: ``moto_server`` (an S3-compatible API) in a subprocess, with
  an IAM user whose key is required once `MotoServer.require_auth` is called.
- `ByteMeter`: counts the bytes this process sends and receives over
  distributed's TCP comms.

Nothing here listens on anything but 127.0.0.1.
"""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import zarr

HOST = "127.0.0.1"


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


def cluster_children():
    """PIDs of this process's descendants, but multiprocessing's resource
    tracker (which lives as long as this process, by design)."""
    import psutil

    pids = set()
    for proc in psutil.Process().children(recursive=True):
        try:
            if "resource_tracker" not in " ".join(proc.cmdline()):
                pids.add(proc.pid)
        except psutil.Error:
            pass
    return pids


def all_exited(pids):
    """True once none of ``pids`` is running (zombies count as exited)."""
    import psutil

    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            pass
    return True


# ---------------------------------------------------------------- data

def make_store(path, m, n, chunk_rows, seed=0, dtype="float32"):
    """A Zarr array of uniform values in [0.05, 0.95], chunked by rows."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(0.05, 0.95, size=(m, n)).astype(dtype)
    z = zarr.create_array(str(path), shape=X.shape, chunks=(chunk_rows, n), dtype=X.dtype)
    z[...] = X
    return str(path)


# ---------------------------------------------------------------- clusters

@contextlib.contextmanager
def local_cluster(n_workers, **kwargs):
    """LocalCluster of ``n_workers`` single-threaded worker processes + a client."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, host=HOST,
                      dashboard_address=f"{HOST}:0", **kwargs) as cluster, \
            Client(cluster, set_as_default=False) as client:
        client.wait_for_workers(n_workers, timeout=60)
        yield client


def _stop(proc, timeout=10):
    """SIGTERM a subprocess we started, then SIGKILL its session if still there."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    # The process group is the session started for this subprocess: it holds
    # only the processes it launched (a nanny's worker).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout)


class SubprocessCluster:
    """``dask scheduler`` + ``dask worker`` subprocesses on 127.0.0.1.

    Parameters
    ----------
    directory : path
        Scheduler file and logs go here.
    n_workers : int
        Worker processes (one ``dask worker`` command each, one thread).
    nanny : bool
        Run each worker under a nanny (which restarts it when it dies).
    env : dict, optional
        Extra environment for every process.
    """

    def __init__(self, directory, n_workers=2, nanny=True, env=None):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.n_workers = n_workers
        self.nanny = nanny
        self.env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
        self.scheduler = None
        self.workers = []
        self.address = None
        self._logs = []

    def _spawn(self, args, log_name):
        log = open(self.directory / log_name, "wb")
        self._logs.append(log)
        return subprocess.Popen([sys.executable, "-m", *args], stdout=log,
                                stderr=subprocess.STDOUT, env=self.env,
                                start_new_session=True, cwd=self.directory)

    def start(self, timeout=60):
        scheduler_file = self.directory / f"scheduler-{uuid.uuid4().hex[:8]}.json"
        self.scheduler = self._spawn(
            ["distributed.cli.dask_scheduler", "--host", HOST, "--port", "0",
             "--dashboard-address", f"{HOST}:0", "--scheduler-file", str(scheduler_file)],
            "scheduler.log")
        wait_for(lambda: scheduler_file.exists() and scheduler_file.stat().st_size > 0
                 or self.scheduler.poll() is not None, timeout, "the scheduler file")
        if self.scheduler.poll() is not None:
            raise RuntimeError(f"dask scheduler exited: {self.log('scheduler.log')}")
        wait_for(lambda: _load_json(scheduler_file) is not None, timeout, "the scheduler file")
        self.address = _load_json(scheduler_file)["address"]
        for i in range(self.n_workers):
            self.add_worker(f"w{i}")
        self.wait_for_workers(self.n_workers, timeout)
        return self

    def add_worker(self, name):
        args = ["distributed.cli.dask_worker", self.address, "--host", HOST,
                "--nthreads", "1", "--nworkers", "1", "--no-dashboard", "--name", name,
                "--memory-limit", "2GiB", "--death-timeout", "60"]
        if not self.nanny:
            args.append("--no-nanny")
        self.workers.append(self._spawn(args, f"worker-{name}.log"))

    def wait_for_workers(self, n, timeout=60):
        from distributed import Client

        with Client(self.address, set_as_default=False, timeout=timeout) as client:
            client.wait_for_workers(n, timeout=timeout)

    def kill_scheduler(self):
        """SIGKILL the scheduler process."""
        os.kill(self.scheduler.pid, signal.SIGKILL)
        self.scheduler.wait(10)

    def log(self, name):
        path = self.directory / name
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def close(self):
        for proc in self.workers:
            _stop(proc)
        if self.scheduler is not None:
            _stop(self.scheduler)
        for log in self._logs:
            log.close()
        self.workers, self.scheduler = [], None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()


def _load_json(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------- S3

class MotoServer:
    """``moto_server`` on 127.0.0.1 in a subprocess, with one IAM user.

    After `start`, ``key`` and ``secret`` hold that user's credentials;
    `require_auth` makes the server reject any other credentials (moto accepts
    anything until then).
    """

    def __init__(self, directory):
        self.directory = Path(directory)
        self.port = free_port()
        self.endpoint = f"http://{HOST}:{self.port}"
        self.proc = None
        self.key = self.secret = None
        self._log = None

    def start(self, timeout=60):
        self.directory.mkdir(parents=True, exist_ok=True)
        self._log = open(self.directory / "moto.log", "wb")
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(self.port)],
            stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True)

        def up():
            if self.proc.poll() is not None:
                raise RuntimeError("moto_server exited: "
                                   + (self.directory / "moto.log").read_text()[-2000:])
            try:
                with urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1):
                    return True
            except OSError:
                return False

        wait_for(up, timeout, "moto_server")
        self._create_user()
        return self

    def _client(self, service, key="setup", secret="setup"):
        import boto3

        return boto3.client(service, endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=key, aws_secret_access_key=secret)

    def _create_user(self):
        iam = self._client("iam")
        iam.create_user(UserName="streamae")
        iam.put_user_policy(UserName="streamae", PolicyName="all", PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        keys = iam.create_access_key(UserName="streamae")["AccessKey"]
        self.key, self.secret = keys["AccessKeyId"], keys["SecretAccessKey"]

    def require_auth(self):
        # text/plain: with urllib's default form type the server sees no body.
        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset-auth", data=b"0",
                                         method="POST", headers={"Content-Type": "text/plain"})
        with urllib.request.urlopen(request, timeout=5):
            pass

    def create_bucket(self, name):
        self._client("s3", self.key, self.secret).create_bucket(Bucket=name)

    def env(self):
        """Environment variables that point AWS clients at this server."""
        return {"AWS_ACCESS_KEY_ID": self.key, "AWS_SECRET_ACCESS_KEY": self.secret,
                "AWS_ENDPOINT_URL": self.endpoint, "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_REGION": "us-east-1"}

    def stop(self):
        if self.proc is not None:
            _stop(self.proc)
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


# ---------------------------------------------------------------- bytes on the wire

class ByteMeter:
    """Bytes this process writes to and reads from distributed's TCP comms.

    Patches ``distributed.comm.tcp.TCP.write`` and the frame decoder that
    ``TCP.read`` calls, for the duration of the ``with`` block. With a
    scheduler in another process, that is exactly the client <-> scheduler
    traffic (the client talks to nothing else unless asked to).
    """

    def __init__(self):
        self.sent = 0
        self.received = 0

    def __enter__(self):
        from distributed.comm import tcp

        self._tcp = tcp
        self._write, self._from_frames = tcp.TCP.write, tcp.from_frames
        meter = self

        async def write(comm, msg, *args, **kwargs):
            n = await meter._write(comm, msg, *args, **kwargs)
            meter.sent += n
            return n

        async def from_frames(frames, *args, **kwargs):
            meter.received += sum(memoryview(f).nbytes for f in frames)
            return await meter._from_frames(frames, *args, **kwargs)

        tcp.TCP.write, tcp.from_frames = write, from_frames
        return self

    def __exit__(self, *exc):
        self._tcp.TCP.write, self._tcp.from_frames = self._write, self._from_frames

    @property
    def total(self):
        return self.sent + self.received
