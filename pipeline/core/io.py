"""The one way edgefit writes a file: atomically, and under a lock where processes share it.

Every artifact (fit.json, ONNX models, engines, checkpoints, profiles, caches, reports)
goes through :func:`atomic_write` or :func:`atomic_writer`: the bytes land in a temporary
file in the destination's own directory, are fsync-ed, then ``os.replace``-d over the
destination. A crash or an exception mid-write therefore leaves the previous file intact,
and a reader never sees half a file.

Where two processes can write the same file (host profiles and the cost cache under
``$EDGEFIT_HOME``, a TensorRT timing cache), :func:`file_lock` serialises them with an
advisory ``flock`` on a sibling ``.lock`` file, so the last writer does not silently drop
what the first one merged in.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

__all__ = ["atomic_write", "atomic_writer", "file_lock", "publish_dir", "sha256_bytes", "sha256_file", "write_json"]


@contextlib.contextmanager
def atomic_writer(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """Yield a file object whose content replaces ``path`` only if the ``with`` block succeeds.

    For writers that want a file object (``torch.save``, ``onnx.save``, ``json.dump``); the
    temporary file is unique per call, so concurrent writers never share one.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_writer mode must be 'wb' or 'w', not {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:  # opened by name, so ``f.name`` is the temporary path (a caller may check the file before it lands)
        with open(tmp, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write(path: str | Path, data: bytes | str | Callable[[IO], object]) -> Path:
    """Write ``data`` (bytes, text, or a callable given the binary file object) to ``path`` atomically."""
    path = Path(path)
    with atomic_writer(path, "wb") as f:
        if callable(data):
            data(f)
        else:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def write_json(path: str | Path, data: object) -> Path:
    """``data`` as indented JSON (NaN refused: it is not JSON), written atomically."""
    import json

    return atomic_write(path, json.dumps(data, indent=2, allow_nan=False, ensure_ascii=False) + "\n")


@contextlib.contextmanager
def file_lock(path: str | Path, timeout_s: float = 120.0) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``<path>.lock`` (Linux/macOS ``flock``) for the block.

    Used around read-modify-write of files that several processes share. Where ``fcntl``
    is missing (Windows) the block runs unlocked, which is what a single process needs.
    """
    import time

    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on POSIX
        yield
        return
    lock = Path(f"{path}.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as fh:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    from pipeline.core.errors import DeployError

                    raise DeployError(f"{path} is locked by another edgefit process for over {timeout_s:g} s "
                                      f"(lock file {lock}); wait for it or remove the lock file.") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def publish_dir(tmp: str | Path, final: str | Path) -> Path:
    """Move a finished directory ``tmp`` to ``final``; an earlier ``final`` is removed only after that.

    The directory counterpart of :func:`atomic_write`: a run directory is built next to its
    destination and renamed into place whole, so a reader sees the old run or the new one.
    """
    import shutil

    tmp, final = Path(tmp), Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (engines and models can be hundreds of MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()
