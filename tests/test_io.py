"""The one atomic writer and the file lock."""

import multiprocessing
import time

import pytest

from pipeline.core.errors import DeployError
from pipeline.core.io import atomic_write, atomic_writer, file_lock, sha256_file, write_json


def test_atomic_write_replaces_whole_files(tmp_path):
    p = tmp_path / "sub" / "a.txt"
    atomic_write(p, "first")
    atomic_write(p, b"second")
    atomic_write(p, lambda f: f.write(b"third"))
    assert p.read_text() == "third" and sorted(x.name for x in p.parent.iterdir()) == ["a.txt"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    p = tmp_path / "a.json"
    write_json(p, {"ok": 1})

    def boom(f):
        f.write(b"half a fi")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        atomic_write(p, boom)
    assert p.read_text() == '{\n  "ok": 1\n}\n' and [x.name for x in tmp_path.iterdir()] == ["a.json"]


def test_the_writer_can_check_the_file_before_it_lands(tmp_path):
    p = tmp_path / "m.bin"
    with pytest.raises(ValueError):
        with atomic_writer(p) as f:
            f.write(b"data")
            f.flush()
            assert open(f.name, "rb").read() == b"data"  # the temporary file, by name
            raise ValueError("check failed")
    assert not p.exists()


def test_write_json_refuses_nan(tmp_path):
    with pytest.raises(ValueError):
        write_json(tmp_path / "x.json", {"x": float("nan")})
    assert not (tmp_path / "x.json").exists()


def test_sha256_file(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"abc")
    assert sha256_file(p) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def _hold(path, seconds, ready):
    with file_lock(path):
        ready.set()
        time.sleep(seconds)


def test_file_lock_serialises_processes(tmp_path):
    target = tmp_path / "shared.json"
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    holder = ctx.Process(target=_hold, args=(str(target), 1.0, ready))
    holder.start()
    try:
        assert ready.wait(30)
        t0 = time.monotonic()
        with file_lock(target):
            waited = time.monotonic() - t0
        assert waited > 0.3  # it waited for the other process to let go
        with pytest.raises(DeployError, match="locked by another edgefit process"):
            ready.clear()
            holder2 = ctx.Process(target=_hold, args=(str(target), 2.0, ready))
            holder2.start()
            assert ready.wait(30)
            with file_lock(target, timeout_s=0.2):
                pass
        holder2.join()
    finally:
        holder.join()
