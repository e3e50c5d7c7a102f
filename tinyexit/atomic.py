"""Files written whole or not at all, and output paths checked before the long work.

Every file the kit writes goes to a temporary name in its own folder and is renamed into place. Files that
belong together (calibration's manifest, sweep.csv, sweep.json and pareto.png) form one group: all are
written to temporaries first and renamed only when every one of them was written, so a command that fails
(a full disk, an error half-way) leaves the files it found as they were:

    with atomic.outputs() as out:
        out.write_text(folder / "sweep.csv", text)
        out.savefig(fig, folder / "pareto.png")
    # renamed here; on an exception the temporaries are removed and nothing is replaced

A target that exists and is not a regular file (`/dev/stdout`, a pipe) is written directly at commit.
Errors are TinyexitErrors naming the file.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import stat
import tempfile
from pathlib import Path

from tinyexit.errors import TinyexitError

PROBE_BYTES = 4096  # written (and dropped) by check_writable: a full disk refuses even that
DEV_FULL = os.makedev(1, 7)  # Linux's /dev/full: every write fails with "no space left"


def _why(err: OSError) -> str:
    return err.strerror or str(err)


def _is_special(path: Path) -> bool:
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


def _new_file_mode(final: Path) -> int:
    """The mode an ordinary write would give: the replaced file's, else 0666 less the umask."""
    try:
        return stat.S_IMODE(final.stat().st_mode)
    except OSError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


class Outputs:
    """A group of files written to temporaries and renamed into place together by `commit`."""

    def __init__(self):
        self._temps: list[tuple[Path, Path]] = []  # (temporary, final)
        self._special: list[tuple[Path, bytes]] = []

    @contextlib.contextmanager
    def open(self, path: str | Path):
        """A binary file object whose contents become `path` when the group commits."""
        path = Path(path)
        if path.is_dir():
            raise TinyexitError(f"cannot write {path}: it is a folder (give a file name)")
        if _is_special(path):
            buffer = io.BytesIO()
            yield buffer
            self._special.append((path, buffer.getvalue()))
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False)
        except OSError as err:
            raise TinyexitError(f"cannot write {path}: {_why(err)}") from None
        tmp = Path(handle.name)
        self._temps.append((tmp, path))
        try:
            with handle:
                yield handle
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, _new_file_mode(path))
        except OSError as err:
            raise TinyexitError(f"cannot write {path}: {_why(err)}") from None

    def write_bytes(self, path: str | Path, data: bytes) -> Path:
        with self.open(path) as f:
            f.write(data)
        return Path(path)

    def write_text(self, path: str | Path, text: str) -> Path:
        return self.write_bytes(path, text.encode())

    def write_json(self, path: str | Path, obj) -> Path:
        return self.write_text(path, json.dumps(obj, indent=1))

    def save_npz(self, path: str | Path, **arrays) -> Path:
        import numpy as np

        with self.open(path) as f:
            np.savez(f, **arrays)
        return Path(path)

    def save_npy(self, path: str | Path, array) -> Path:
        import numpy as np

        with self.open(path) as f:
            np.save(f, array, allow_pickle=False)
        return Path(path)

    def savefig(self, fig, path: str | Path, **kwargs) -> Path:
        path = Path(path)
        with self.open(path) as f:
            fig.savefig(f, format=path.suffix.lstrip(".") or "png", **kwargs)
        return path

    def commit(self) -> None:
        try:
            for path, data in self._special:
                with open(path, "wb") as f:
                    f.write(data)
            for tmp, final in self._temps:
                os.replace(tmp, final)
        except OSError as err:
            raise TinyexitError(f"cannot write {err.filename or 'an output'}: {_why(err)}") from None
        finally:
            self.discard()

    def discard(self) -> None:
        for tmp, _ in self._temps:
            with contextlib.suppress(OSError):
                tmp.unlink()
        self._temps, self._special = [], []


@contextlib.contextmanager
def outputs():
    """A group of outputs: renamed into place when the block ends normally, dropped when it raises."""
    group = Outputs()
    try:
        yield group
    except BaseException:
        group.discard()
        raise
    group.commit()


def write_bytes(path: str | Path, data: bytes) -> Path:
    with outputs() as out:
        return out.write_bytes(path, data)


def write_text(path: str | Path, text: str) -> Path:
    with outputs() as out:
        return out.write_text(path, text)


def write_json(path: str | Path, obj) -> Path:
    with outputs() as out:
        return out.write_json(path, obj)


def save_npz(path: str | Path, **arrays) -> Path:
    with outputs() as out:
        return out.save_npz(path, **arrays)


def savefig(fig, path: str | Path, **kwargs) -> Path:
    with outputs() as out:
        return out.savefig(fig, path, **kwargs)


def check_writable(path: str | Path | None, flag: str = "output", folder: bool = False) -> None:
    """Fail now, before any long work, if `path` (a file, or with `folder` a folder to fill) cannot be written:
    a read-only or full file system, a parent that is a file, a folder given for a file, `/dev/full`.
    Creates nothing that stays (the probe is an anonymous temporary file)."""
    if path is None:
        return
    path = Path(path)
    where = f"{flag} {path}"
    if folder:
        if path.exists() and not path.is_dir():
            raise TinyexitError(f"{where}: not a folder")
        probe = path
    else:
        if path.is_dir():
            raise TinyexitError(f"{where}: a folder; give a file name")
        if _is_special(path):
            if path.stat().st_rdev == DEV_FULL or not os.access(path, os.W_OK):
                raise TinyexitError(f"{where}: cannot be written" +
                                    (" (the device is always full)" if path.stat().st_rdev == DEV_FULL else ""))
            return
        probe = path.parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise TinyexitError(f"{where}: {probe} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=probe) as f:
            f.write(b"\0" * PROBE_BYTES)
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        raise TinyexitError(f"{where}: cannot write in {probe} ({_why(err)})") from None
