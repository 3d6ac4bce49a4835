"""What must fit: the latency and memory budget of a fit, and how close to it a measurement may come.

It sits in ``core`` because every layer judges against it: the search (predicted), the
closed loop (measured, with the noise margin), and the verdict recorded in fit.json.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Budget:
    """What must fit. ``None`` means unconstrained; memory in MiB."""

    latency_ms: float | None = None
    memory_mb: float | None = None
    percentile: int = 50
    noise_margin_pct: float = 5.0  # a *measured* value this close under a budget counts as over it (see
    # pipeline/measure/loop.py: the shipped model must still fit when it is re-timed later)

    def to_dict(self) -> dict:
        return asdict(self)


__all__ = ["Budget"]
