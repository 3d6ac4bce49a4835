"""The one table of timing settings: how long and how often each kind of measurement times a model.

Every measurement names its row: the closed loop of ``deploy fit``, the full and quick
calibration suites, and trtexec on a TensorRT device. The row travels with the result
(:class:`~pipeline.measure.device.Measurement.settings`), so a number always says how it
was obtained.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from pipeline.core.errors import UnknownName


@dataclass(frozen=True)
class TimingSettings:
    """Untimed ``warmup`` runs, then ``rounds`` rounds each of at least ``min_repeats`` runs and ``min_time_s``.

    trtexec warms up by time, not by count, and averages ``avg_runs`` queries per reported
    line: ``warmup_ms`` and ``avg_runs`` are its own knobs (``None`` elsewhere); its
    ``--iterations`` and ``--duration`` are ``min_repeats`` and ``min_time_s``.
    """

    warmup: int
    min_repeats: int
    min_time_s: float
    rounds: int = 1
    warmup_ms: float | None = None
    avg_runs: int | None = None

    def __post_init__(self) -> None:
        if self.warmup < 0 or self.min_repeats < 1 or self.min_time_s < 0 or self.rounds < 1:
            raise ValueError(f"invalid timing settings {self}")

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def describe(self) -> str:
        """One line for reports: what was run, and how often."""
        each = f"≥{self.min_repeats} runs and ≥{self.min_time_s:g}s"
        if self.rounds > 1:
            return f"{self.warmup} warm-up, then {self.rounds} rounds of {each}"
        return f"{self.warmup} warm-up, then {each}"

    def trtexec(self) -> dict:
        """trtexec's knobs: ``--warmUp`` (ms), ``--iterations``, ``--duration`` (s), ``--avgRuns``."""
        if self.warmup_ms is None or self.avg_runs is None:
            raise ValueError("trtexec settings need warmup_ms and avg_runs")
        return {"warmup_ms": self.warmup_ms, "iterations": self.min_repeats, "duration_s": self.min_time_s,
                "avg_runs": self.avg_runs}


TIMING: dict[str, TimingSettings] = {
    # fit's closed loop: 3 rounds, because the same session drifted 4-16 % between one-second
    # rounds on the 2-core dev VM; a p50 budget is judged on the slowest round.
    "fit": TimingSettings(warmup=10, min_repeats=20, min_time_s=0.5, rounds=3),
    # a shipped file that contradicts its earlier measurement: timed again, each round next to the reference
    # model (pipeline.measure.loop.check_shipped); more, shorter rounds give the load check more pairs
    "fit-recheck": TimingSettings(warmup=10, min_repeats=15, min_time_s=0.3, rounds=6),
    # the calibration suite: one long round per model (the predictor wants a stable p50)
    "calibrate": TimingSettings(warmup=10, min_repeats=30, min_time_s=1.5),
    "calibrate-quick": TimingSettings(warmup=3, min_repeats=10, min_time_s=0.4),
    # trtexec on a TensorRT device: 500 ms warm-up, then at least 200 queries and 5 s
    "trtexec": TimingSettings(warmup=0, min_repeats=200, min_time_s=5, warmup_ms=500, avg_runs=10),
}


def timing(name: str) -> TimingSettings:
    if name not in TIMING:
        raise UnknownName("timing settings", name, list(TIMING))
    return TIMING[name]


__all__ = ["TIMING", "TimingSettings", "timing"]
