"""Where firmware runs go: a pool of workers with one interface, `.map(fn, args_list) -> results in order`.

`LocalExecutor` runs each call in a thread of this process (each one waits on its own emulator process, so
threads suffice). `DaskExecutor` sends them to a Dask distributed scheduler (`--cluster tcp://host:port`) or
to a cluster of worker processes started here (`--cluster local:N`). Workers may be other machines: a file
argument (the firmware binary) travels as its bytes, scattered once per map, and each worker writes it into
its own temporary folder under its content hash, so it is written once per worker, not once per shard.
Workers need tinyexit (the same version) and, for QEMU targets, qemu-system-arm; host builds run only on
workers of the machine's own kind.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from tinyexit.errors import TinyexitError

CONNECT_TIMEOUT_S = 5.0  # an unreachable scheduler is an error after this long, not a hang
LOCAL_ADDRESS = re.compile(r"local:(\d+)$")
REMOTE_ADDRESS = re.compile(r"(tcp|tls)://[^\s/:]+:\d+$")


def check_address(text: str) -> str:
    """`tcp://host:port` (or tls://) of a Dask scheduler, or `local:N` (N worker processes started here)."""
    local = LOCAL_ADDRESS.match(text)
    if local and int(local.group(1)) >= 1 or REMOTE_ADDRESS.match(text):
        return text
    raise ValueError(f"expected tcp://HOST:PORT of a Dask scheduler or local:N (N worker processes), got '{text}'")


def add_cluster_argument(p, purpose: str = "run the firmware") -> None:
    """--cluster, for every command that runs the firmware (beside its --jobs)."""
    import argparse

    def address(text: str) -> str:
        try:
            return check_address(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    p.add_argument("--cluster", type=address, metavar="ADDRESS",
                   help=f"{purpose} on a Dask cluster instead of this machine: tcp://HOST:PORT of a running "
                        "scheduler, or local:N to start N worker processes here; workers need tinyexit and, for "
                        "QEMU targets, qemu-system-arm")


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS tells it)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class LocalExecutor:
    """Calls in threads of this process, at most `workers` at a time (default: the cores available)."""

    local = True

    def __init__(self, workers: int | None = None):
        self.workers = max(1, workers or available_cores())

    def map(self, fn: Callable, args_list: Sequence[tuple]) -> list:
        """fn(*args) for each args, results in the order given."""
        from concurrent.futures import ThreadPoolExecutor

        if len(args_list) <= 1 or self.workers == 1:
            return [fn(*args) for args in args_list]
        with ThreadPoolExecutor(min(self.workers, len(args_list))) as pool:
            return list(pool.map(lambda args: fn(*args), args_list))

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass(frozen=True)
class ShippedFile:
    """A local file's bytes on their way to a worker, which writes them once under their content hash."""

    name: str
    data: bytes
    digest: str
    executable: bool

    @classmethod
    def of(cls, path: Path) -> "ShippedFile":
        data = Path(path).read_bytes()
        return cls(Path(path).name, data, hashlib.sha256(data).hexdigest(), os.access(path, os.X_OK))

    def materialise(self, root: Path | None = None) -> Path:
        """The file on this machine: <temp>/tinyexit-shipped/<sha256>/<name>, written atomically if absent."""
        folder = Path(root or tempfile.gettempdir()) / "tinyexit-shipped" / self.digest
        path = folder / self.name
        if not path.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{self.name}.")
            with os.fdopen(fd, "wb") as f:
                f.write(self.data)
            if self.executable:
                os.chmod(tmp, 0o755)
            os.replace(tmp, path)  # threads of one worker may race: the same bytes win either way
        return path


def _on_worker(fn: Callable, args: tuple, positions: tuple[int, ...], *files: ShippedFile):
    """Runs on a Dask worker: shipped files become local paths; a TinyexitError says which worker it came
    from and travels back as a plain TinyexitError (its subclasses need not unpickle on the client)."""
    args = list(args)
    for position, shipped in zip(positions, files):
        args[position] = shipped.materialise()
    try:
        return fn(*args)
    except TinyexitError as err:
        raise TinyexitError(f"worker {_worker_address()}: {err}") from None


def _tinyexit_version() -> str:
    import tinyexit

    return tinyexit.__version__


def _worker_address() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return "?"


def _import_distributed():
    try:
        import distributed
    except ImportError:
        raise TinyexitError("--cluster needs Dask: pip install 'dask[distributed]'") from None
    return distributed


class DaskExecutor:
    """Calls on a Dask distributed cluster: `tcp://host:port` of a running scheduler, or `local:N` worker
    processes started (and stopped) here. `workers`: the worker threads the scheduler knows of."""

    local = False

    def __init__(self, address: str, connect_timeout: float = CONNECT_TIMEOUT_S):
        check_address(address)
        distributed = _import_distributed()
        import dask

        self.address = address
        self._cluster = None
        local = LOCAL_ADDRESS.match(address)
        # quiet: a worker's own log lines would interleave with the progress bar and the result table
        with dask.config.set({"distributed.logging.distributed": "error"}):
            if local:
                # one thread per worker process: each shard drives an emulator, so processes are the unit
                self._cluster = distributed.LocalCluster(n_workers=int(local.group(1)), threads_per_worker=1,
                                                         processes=True, dashboard_address=None,
                                                         silence_logs=logging.CRITICAL)
                self.client = distributed.Client(self._cluster, timeout=connect_timeout)
            else:
                try:
                    _probe(address, connect_timeout)  # a refused connection fails at once, not after the timeout
                    self.client = distributed.Client(address, timeout=connect_timeout)
                except (OSError, TimeoutError) as err:
                    raise TinyexitError(f"--cluster: no Dask scheduler answered at {address} within "
                                        f"{connect_timeout:g} s ({_first_line(err)})") from None
                except Exception as err:  # something answered, but not in Dask's protocol
                    raise TinyexitError(f"--cluster: {address} answered, but not as a Dask scheduler "
                                        f"({type(err).__name__}: {_first_line(err)})") from None
        workers = self.client.scheduler_info().get("workers", {})
        if not workers:
            self.close()
            raise TinyexitError(f"--cluster: the Dask scheduler at {address} has no workers")
        self.workers = sum(w.get("nthreads", 1) for w in workers.values())
        self._check_workers()

    def _check_workers(self) -> None:
        """Every worker imports this tinyexit's version (the shards are its functions, sent by name)."""
        import tinyexit

        try:
            versions = self.client.run(_tinyexit_version)
        except Exception as err:
            self.close()
            raise TinyexitError(f"--cluster: a worker cannot run tinyexit (install it on every worker): "
                                f"{_first_line(err)}") from None
        other = {worker: v for worker, v in versions.items() if v != tinyexit.__version__}
        if other:
            self.close()
            raise TinyexitError(f"--cluster: workers run another tinyexit than this {tinyexit.__version__}: "
                                + ", ".join(f"{w} ({v})" for w, v in sorted(other.items())))

    def map(self, fn: Callable, args_list: Sequence[tuple]) -> list:
        """fn(*args) on the cluster for each args, results in the order given; Path arguments naming files
        travel as their bytes (scattered once each)."""
        distributed = _import_distributed()

        scattered: dict[Path, object] = {}
        futures = []
        for args in args_list:
            positions = tuple(i for i, a in enumerate(args) if isinstance(a, Path) and a.is_file())
            for i in positions:
                if args[i] not in scattered:
                    scattered[args[i]] = self.client.scatter(ShippedFile.of(args[i]), broadcast=False, hash=True)
            plain = tuple(None if i in positions else a for i, a in enumerate(args))
            files = [scattered[args[i]] for i in positions]
            futures.append(self.client.submit(_on_worker, fn, plain, positions, *files, pure=False))
        try:
            for future in distributed.as_completed(futures):
                future.result()  # the first failure raises here, not after the slowest shard
            return self.client.gather(futures)
        except TinyexitError:
            self.client.cancel(futures)
            raise
        except (distributed.KilledWorker, distributed.comm.CommClosedError) as err:
            self.client.cancel(futures)
            raise TinyexitError(f"--cluster: a worker was lost ({_first_line(err)})") from None

    def close(self) -> None:
        self.client.close()
        if self._cluster is not None:
            self._cluster.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _probe(address: str, timeout: float) -> None:
    import socket

    host, port = address.split("://", 1)[1].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout):
        pass


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]


def executor(jobs: int | None = None, cluster: str | None = None):
    """The pool a command's firmware runs go to: a DaskExecutor for `cluster`, else `jobs` local threads."""
    return DaskExecutor(cluster) if cluster else LocalExecutor(jobs)
