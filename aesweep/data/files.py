"""Dataset files on disk: the data root, a lock per dataset so that concurrent trials prepare it once, md5 checks
against the upstream tables, gunzip, downloads; every problem a ``DataError`` with a one-line message naming the file.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import filelock

# torchvision is imported inside the loaders that read its files: importing it pulls in torchvision.models and
# torch._dynamo (~1.5 s of a Ray worker's start-up on 2 cores), which a shapes sweep never needs.

if TYPE_CHECKING:
    pass

class DataError(Exception):
    """A dataset file is missing, corrupt or unreadable. The message is one line naming the file and the problem."""

    def __init__(self, message: str):
        super().__init__(re.sub(r"\s*\n\s*", " ", str(message)).strip())



PREPARE_LOCK_TIMEOUT_S = 1800.0


@contextmanager
def preparing(root: Path, name: str, timeout: float = PREPARE_LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold the inter-process lock for preparing dataset ``name`` under ``root`` (checks, extraction, download).

    Any number of processes on any number of hosts may prepare one root at once (the first wave of trials of a
    sweep, every new node of a cluster, nodes sharing the root over NFS): one of them prepares, the others wait and
    then find the files already there and verified. ``filelock`` takes an ``fcntl`` lock on ``root/.NAME.lock``,
    which NFSv4 and local filesystems honour; within the lock, files are still written under unique temporary
    names and renamed into place atomically, so a reader never sees a half-written file.
    """
    lock: filelock.FileLock | None = filelock.FileLock(str(root / f".{name}.lock"), timeout=timeout)
    try:
        root.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except filelock.Timeout:
        raise DataError(f"{name}: another process has held {lock.lock_file} for over {timeout:.0f} s while "
                        "preparing the dataset; if none is running, delete that file") from None
    except OSError:
        # A read-only root (a shared, pre-filled dataset directory): nothing will be written there, so there is
        # nothing to serialise; a missing file still fails below with its own one-line message.
        lock = None
    try:
        yield
    finally:
        if lock is not None:
            lock.release()


_md5_memo: dict[tuple[str, int, int], str] = {}


def _md5(path: Path) -> str:
    # Memoised on (path, size, mtime): a worker that reloads a dataset for each trial hashes its files once.
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _md5_memo:
        digest = hashlib.md5()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _md5_memo[key] = digest.hexdigest()
    return _md5_memo[key]


def _mismatch(path: Path, actual: str, expected: str) -> DataError:
    return DataError(f"{path}: checksum mismatch (md5 {actual}, expected {expected}; "
                     "the file is corrupted or truncated)")


def _check(path: Path, expected: str) -> None:
    actual = _md5(path)
    if actual != expected:
        raise _mismatch(path, actual, expected)


def _gunzip(src: Path, dest: Path | None) -> str | None:
    """md5 of the decompressed payload of ``src`` (None if it is not a valid gzip), written to ``dest`` if given."""
    digest = hashlib.md5()
    try:
        with gzip.open(src, "rb") as f, open(dest or os.devnull, "wb") as out:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
                out.write(block)
    except (OSError, EOFError, gzip.BadGzipFile, ValueError):
        return None
    return digest.hexdigest()


def _download(name: str, root: Path, missing: list[Path], fetch: Callable[[Path], None],
              md5s: dict[Path, str]) -> None:
    """Fetch through torchvision into a temporary directory inside ``root``, verify, move the missing files into
    place. The temporary directory is removed whatever happens, so a failure leaves no partial file behind."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=root))
    try:
        fetch(tmp)
        for path in missing:
            _check(tmp / path.relative_to(root), md5s[path])
        for path in missing:
            path.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp / path.relative_to(root), path)
    except Exception as err:
        why = " ".join(str(err).split())[:300]  # torchvision lists every mirror tried, over several lines
        raise DataError(f"{name}: {missing[0]} not found and download failed ({type(err).__name__}: {why}); "
                        "put the upstream files there or set AESWEEP_DATA") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _fetch(cls: type, folder: Path) -> None:
    """torchvision's own download (mirrors, archive md5, extraction) into ``folder``, without the constructor: it
    would also load a split and turn a corrupt file into a generic error before ``_download`` can name it."""
    import torchvision

    dataset = cls.__new__(cls)
    torchvision.datasets.VisionDataset.__init__(dataset, str(folder))
    dataset.download()


def _not_found(name: str, path: Path) -> DataError:
    return DataError(f"{name}: {path} not found and download is off (dataset.download: false); "
                     "put the upstream files there or set AESWEEP_DATA")


def _construct(name: str, make: Callable[[], object], where: Path):
    # The files were verified, so a failure here is an unexpected format; keep torchvision's trace out of it.
    try:
        return make()
    except Exception as err:
        raise DataError(f"{name}: torchvision could not read {where} ({type(err).__name__}: {err})") from None



