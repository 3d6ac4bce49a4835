"""Where the points of a grid or study run: here, one after another, or as Ray tasks (``--backend ray``).

Both backends run the same pure :func:`~pipeline.research.points.run_point` on the same
:class:`~pipeline.research.points.PointSpec`, and every finished point lands in the same per-point
cache (``DIR/points/<key>.json``). So a grid started locally can be finished on a Ray cluster and
the reverse, and a point already in the cache is never sent anywhere.

:class:`RayBackend` (Ray is an optional extra, ``pip install 'edgefit[distributed]'``):

* **Resources.** One task per point, declaring ``--trial-cpus`` CPUs; Ray runs as many at once as
  the cluster (or, locally, this machine) has room for. ``--ray-address`` joins a running cluster
  (``ray start --head`` on one machine, ``ray start --address HEAD:6379`` on the others); without it a
  local Ray starts on this machine. On a cluster the grid folder must be on storage every node sees.
* **Failures.** A task whose worker process dies (killed, out of memory, node lost) is retried up
  to :data:`MAX_RETRIES` times. A task that raises (bad data, an invalid point) is not retried: it
  would fail again; its message is recorded for that point and the grid goes on.
* **Progress** is reported as tasks finish, in whatever order they finish.

Latency on Ray: each point is timed inside its task, on the node that trained it. Tasks that run
side by side on one machine disturb each other's timings; give ``--trial-cpus`` all of a node's
CPUs when latency matters as much as accuracy (``--objective accuracy-at-latency``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.errors import DeployError, UsageError

BACKENDS = ("local", "ray")
MAX_RETRIES = 3  # retries of a task whose worker died (not of a task that raised)
INSTALL_HINT = "pip install 'edgefit[distributed]' (or pip install ray)"

Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class PointJob:
    """One point to run, with the label progress and errors use."""

    spec: object  # PointSpec
    label: str


@dataclass(frozen=True)
class PointFailure:
    """A point that could not be run: its label and why (recorded in grid.json, the grid goes on)."""

    label: str
    error: str

    def to_dict(self) -> dict:
        return {"label": self.label, "error": self.error}


def _run_one(spec, cache_dir: str) -> dict:
    """The task body: exactly what the local backend runs for a point (imports happen in the worker)."""
    from pipeline.research.points import PointCache, run_point

    return run_point(spec, PointCache(cache_dir))


class LocalBackend:
    """Points one after another in this process (the default)."""

    name = "local"

    def run(self, jobs: Sequence[PointJob], cache, *, data=None, device=None, log: Callable[[str], None],
            progress: Progress | None = None, done_before: int = 0, total: int | None = None
            ) -> list[dict | PointFailure]:
        from pipeline.research.points import run_point

        results: list[dict | PointFailure] = []
        total = total or len(jobs)
        for i, job in enumerate(jobs):
            results.append(run_point(job.spec, cache, data=data, device=device, log=log))
            if progress:
                progress(done_before + i + 1, total, job.label)
        return results


class RayBackend:
    """Points as Ray tasks with declared CPUs; dead workers retried, real errors recorded."""

    name = "ray"

    def __init__(self, address: str | None = None, trial_cpus: float = 1.0, max_retries: int = MAX_RETRIES):
        try:
            import ray  # noqa: F401
        except ImportError:
            raise DeployError(f"--backend ray needs Ray, which is not installed: {INSTALL_HINT}.") from None
        if not trial_cpus > 0:
            raise UsageError(f"--trial-cpus must be positive, got {trial_cpus:g}.")
        self.address, self.trial_cpus, self.max_retries = address, float(trial_cpus), int(max_retries)

    def _init(self):
        import ray

        if not ray.is_initialized():
            try:
                ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                         configure_logging=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = self.address or "a local Ray"
                raise DeployError(f"cannot start or join {where}: {exc}".rstrip(".") + ".") from None
        return ray

    def run(self, jobs: Sequence[PointJob], cache, *, data=None, device=None, log: Callable[[str], None],
            progress: Progress | None = None, done_before: int = 0, total: int | None = None
            ) -> list[dict | PointFailure]:
        if device is not None:
            raise UsageError("--backend ray measures each point on the node that trained it; it cannot use a "
                             "measurement agent (--agent) too.")
        results: list[dict | PointFailure | None] = [None] * len(jobs)
        total = total or len(jobs)
        pending = {}
        for i, job in enumerate(jobs):
            key = job.spec.key(data.fingerprint()) if data is not None else None
            row = cache.get(key) if key else None
            if row is not None:  # finished earlier (here or on another backend): never sent anywhere
                results[i] = {**row, "cached": True}
        ray = self._init()
        task = ray.remote(num_cpus=self.trial_cpus, max_retries=self.max_retries, retry_exceptions=False)(_run_one)
        for i, job in enumerate(jobs):
            if results[i] is None:
                pending[task.remote(job.spec, str(Path(cache.dir).parent))] = i
        log(f"ray: {len(pending)} point(s) as tasks of {self.trial_cpus:g} CPU each on "
            f"{self.address or 'a local Ray'} ({int(ray.cluster_resources().get('CPU', 0))} CPUs); "
            f"{len(jobs) - len(pending)} from the cache")
        done = done_before + len(jobs) - len(pending)
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            i = pending.pop(ready[0])
            results[i] = self._result(ray, ready[0], jobs[i], log)
            done += 1
            if progress:
                progress(done, total, jobs[i].label)
        return [r for r in results if r is not None]

    @staticmethod
    def _result(ray, ref, job: PointJob, log: Callable[[str], None]) -> dict | PointFailure:
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:  # the point itself raised: recorded, not retried
            cause = exc.cause if getattr(exc, "cause", None) is not None else exc
            message = " ".join(str(cause).split())[:400] or type(cause).__name__
        except ray.exceptions.RayError as exc:  # its worker kept dying: retries exhausted
            message = f"the worker died {1 + MAX_RETRIES} times ({type(exc).__name__})"
        log(f"warning: {job.label} failed: {message}")
        return PointFailure(job.label, message)


def backend_for(name: str, address: str | None = None, trial_cpus: float = 1.0):
    """The backend ``--backend`` names."""
    if name == "local":
        if address is not None:
            raise UsageError("--ray-address goes with --backend ray.")
        return LocalBackend()
    if name == "ray":
        return RayBackend(address, trial_cpus)
    raise UsageError(f"unknown backend {name!r}; use one of {', '.join(BACKENDS)}.")


__all__ = ["BACKENDS", "INSTALL_HINT", "MAX_RETRIES", "LocalBackend", "PointFailure", "PointJob", "RayBackend",
           "backend_for"]
