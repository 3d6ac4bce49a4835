"""`deploy grid --backend ray` on a local Ray (2 CPUs): the local backend's rows, surviving a killed worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from click.testing import CliRunner

from pipeline.cli import cli
from pipeline.research.backends import RayBackend
from pipeline.research.grid import GridOptions, run_grid

DATA = "builtin:shapes:samples=40,size=32"
# the two reference points (EfficientNet's and Dollár's constants) of a ratio-1.5 grid on a step of 1, two seeds
OPTS = GridOptions("resnet18", DATA, phi=-4, flops_ratio=1.5, step=1.0, tolerance=0.1, seeds=2, epochs=1, opset=17)


def _kill_one_worker(stop: threading.Event, killed: list[int]) -> None:
    """Kill -9 the first Ray worker seen running a point (its process title is ``ray::_run_one``)."""
    while not stop.is_set() and not killed:
        out = subprocess.run(["pgrep", "-f", "ray::_run_one"], capture_output=True, text=True).stdout.split()
        for pid in out:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                continue
            killed.append(int(pid))
            return
        time.sleep(0.2)


def _rows(result: dict) -> dict:
    return {(p["alpha"], p["beta"], p["gamma"], r["seed"]): r for p in result["points"] for r in p["rows"]}


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow  # about 40 s: two grids of four trainings; `make test-all` runs it
def test_ray_grid_matches_local_and_survives_a_killed_worker(tmp_path, ray_local):
    local = run_grid(OPTS, tmp_path / "local")
    stop, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_one_worker, args=(stop, killed), daemon=True)
    killer.start()
    try:
        remote = run_grid(OPTS, tmp_path / "ray", backend=RayBackend(trial_cpus=1))
    finally:
        stop.set()
        killer.join(5)
    assert killed, "no Ray worker was seen running a point"
    a, b = _rows(local), _rows(remote)
    assert len(a) == 4 and set(a) == set(b)  # every point and seed is present after the kill
    assert not any(p.get("failures") for p in remote["points"]) and remote["backend"] == "ray"
    for k in a:  # training is deterministic per seed: the same accuracy wherever it ran
        assert abs(a[k]["val_accuracy"] - b[k]["val_accuracy"]) <= 1e-6
        assert (a[k]["macs"], a[k]["params"], a[k]["resolution"]) == (b[k]["macs"], b[k]["params"], b[k]["resolution"])
    again = run_grid(OPTS, tmp_path / "ray", backend=RayBackend(trial_cpus=1))  # resumes from the shared cache
    assert all(r["cached"] for r in _rows(again).values())


def test_a_point_that_raises_is_recorded_and_the_grid_goes_on(tmp_path, ray_local, monkeypatch):
    from pipeline.research import backends

    def boom(spec, cache_dir):
        if spec.label == "efficientnet":
            raise ValueError("bad data in this point")
        from pipeline.research.points import PointCache, run_point

        return run_point(spec, PointCache(cache_dir))

    monkeypatch.setattr(backends, "_run_one", boom)
    opts = GridOptions("resnet18", DATA, phi=-4, flops_ratio=1.5, step=1.0, tolerance=0.1, seeds=1, epochs=1,
                       opset=17)
    result = run_grid(opts, tmp_path / "g", backend=RayBackend(trial_cpus=1))
    by_ref = {p["references"][0]: p for p in result["points"]}
    assert "bad data in this point" in by_ref["efficientnet"]["failures"][0]["error"]
    assert by_ref["dollar-fast"]["seeds"] == 1 and not by_ref["dollar-fast"].get("failures")


def test_backend_ray_without_ray_exits_1_with_the_install_hint(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    r = CliRunner().invoke(cli, ["grid", "--family", "resnet18", "--data", DATA, "--seeds", "1", "--epochs", "1",
                                 "--out", str(tmp_path / "g"), "--backend", "ray"])
    assert r.exit_code == 1 and "pip install 'edgefit[distributed]'" in r.output
    assert not (tmp_path / "g" / "grid.json").exists()
    r = CliRunner().invoke(cli, ["study", "--data", DATA, "--out", str(tmp_path / "s"), "--backend", "ray"])
    assert r.exit_code == 1 and "edgefit[distributed]" in r.output
    assert json.dumps(r.output)  # one error line, no traceback
    assert "Traceback" not in r.output
