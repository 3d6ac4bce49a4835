"""Budget units: ``Duration("20ms")`` and ``Size("256MB")`` as click parameter types.

A bare number is ambiguous (20 what?) and is rejected with the right form rather than
guessed. ``MB``/``GB`` are decimal (10^6, 10^9 bytes); ``MiB``/``GiB`` binary. Every
``*_mb`` figure edgefit prints is MiB (2^20 bytes), the unit the kernel reports memory in.
"""

from __future__ import annotations

import math
import re

import click

_NUMBER = r"([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)"
TIME_UNITS_MS = {"us": 1e-3, "µs": 1e-3, "ms": 1.0, "s": 1e3}
SIZE_UNITS_BYTES = {"KB": 1e3, "MB": 1e6, "GB": 1e9, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}
MIB = 2**20


def _split(text: str, kind: str, example: str, units: dict) -> tuple[float, str]:
    """(value, unit key) from '20ms'; ``units`` keys are matched exactly, then lower-cased."""
    raw = str(text).strip()
    if raw.startswith("-"):
        raise ValueError(f"{kind} must be positive, got '{raw}'.")
    m = re.fullmatch(_NUMBER + r"\s*([A-Za-zµ]*)", raw)
    if not m:
        raise ValueError(f"cannot read {kind} '{raw}': write a number and a unit, e.g. {example}.")
    value, unit = float(m.group(1)), m.group(2)
    if not unit:
        raise ValueError(f"{kind} '{raw}' has no unit: write e.g. {example} ({', '.join(units)}).")
    key = unit if unit in units else next((u for u in units if u.lower() == unit.lower()), None)
    if key is None:
        raise ValueError(f"unknown {kind} unit '{unit}' in '{raw}': use one of {', '.join(units)}.")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{kind} must be positive, got '{raw}'.")
    return value, key


def parse_duration_ms(text: str) -> float:
    """'20ms' -> 20.0, '500us' -> 0.5, '0.02s' -> 20.0."""
    value, unit = _split(text, "latency", "20ms", TIME_UNITS_MS)
    return value * TIME_UNITS_MS[unit]


def parse_size_mib(text: str) -> float:
    """'256MB' -> 244.14 (MiB), '256MiB' -> 256.0, '1GB' -> 953.67."""
    value, unit = _split(text, "memory", "256MB or 256MiB", SIZE_UNITS_BYTES)
    return value * SIZE_UNITS_BYTES[unit] / MIB


class _UnitType(click.ParamType):
    """A number with a unit; ``parse`` turns the text into edgefit's unit or raises ValueError."""

    parse = staticmethod(parse_duration_ms)

    def convert(self, value, param, ctx):
        if isinstance(value, float):
            return value
        try:
            return self.parse(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class Duration(_UnitType):
    """A latency with a unit (us, ms, s); converts to milliseconds."""

    name = "duration"
    parse = staticmethod(parse_duration_ms)


class Size(_UnitType):
    """A memory size with a unit (KB, MB, GB, KiB, MiB, GiB); converts to MiB."""

    name = "size"
    parse = staticmethod(parse_size_mib)
