"""Expected ImageNet top-1 of an architecture from its MACs: the rule ``deploy fit --family auto`` decides by.

Each family's published architectures (:data:`pipeline.models.published.PUBLISHED_TOP1`, every number with its
source) are placed on edgefit's own MAC axis (:func:`pipeline.cost.plan.scale_cost`), and the expected top-1 of
any other size is read off the line through them, linear in log2(MACs): accuracy grows by a roughly constant
amount per doubling of compute over the published ranges. Outside a family's published range the end segment
is extended and the estimate says ``extrapolated``; a family with a single published size takes the slope of a
related family's line (:data:`~pipeline.models.published.SLOPE_FROM`).

This is a statement about ImageNet, not about the user's data: it ranks families by what their authors
measured at comparable compute. ``--data`` with training measures the chosen model on the user's data.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass

from pipeline.core.scaling import Scale
from pipeline.cost.plan import scale_cost
from pipeline.models.published import PUBLISHED_TOP1, SLOPE_FROM

RULE = ("published ImageNet top-1 of each family (pipeline/models/published.py, every number cited), interpolated "
        "linearly in log2(MACs) between its published architectures, their MACs counted by edgefit's own cost "
        "model, and extended with the nearest segment's slope outside them; the family whose largest "
        "predicted-to-fit architecture has the highest expected top-1 is chosen (ties: the faster prediction)")


@dataclass(frozen=True)
class Expected:
    """Expected top-1 (percent) at some MACs, and how it was read off the family's published line."""

    top1: float
    how: str  # "published" (a published size), "interpolated" or "extrapolated"
    between: tuple[str, ...]  # the published architectures the estimate is drawn from
    sources: tuple[str, ...]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["between"], d["sources"] = list(self.between), list(self.sources)
        return d


@functools.cache
def published_points(family: str) -> tuple[tuple[float, float, str, str], ...]:
    """(MACs, top-1, label, source) of ``family``'s published architectures, by MACs."""
    points = []
    for p in PUBLISHED_TOP1[family]:
        scale = Scale(depth=p.depth, width=p.width, resolution=p.resolution, preset=p.preset)
        points.append((float(scale_cost(p.family or family, scale).macs), p.top1, p.label, p.source))
    return tuple(sorted(points))


def expected_top1(family: str, macs: float) -> Expected:
    """The expected ImageNet top-1 of a ``family`` architecture of ``macs`` multiply-adds (see the module doc)."""
    if family not in PUBLISHED_TOP1:
        raise KeyError(f"no published accuracy for {family}")
    pts = published_points(family)
    x = math.log2(macs)
    xs = [math.log2(m) for m, *_ in pts]
    if len(pts) == 1:
        (m0, a0, label, src), = pts
        donor = published_points(SLOPE_FROM[family])
        (ma, aa, *_), (mb, ab, *_) = donor[0], donor[-1]
        slope = (ab - aa) / (math.log2(mb) - math.log2(ma))
        how = "published" if abs(x - xs[0]) < 1e-9 else "extrapolated"
        return Expected(round(a0 + slope * (x - xs[0]), 2), how, (label,), (src, donor[0][3]))
    for i, (xa, xb) in enumerate(zip(xs, xs[1:])):
        if xa <= x <= xb:
            (_, aa, la, sa), (_, ab, lb, sb) = pts[i], pts[i + 1]
            top1 = aa + (ab - aa) * (x - xa) / (xb - xa)
            how = "published" if min(abs(x - xa), abs(x - xb)) < 1e-9 else "interpolated"
            return Expected(round(top1, 2), how, (la, lb), tuple(dict.fromkeys((sa, sb))))
    i = 0 if x < xs[0] else len(pts) - 2
    (_, aa, la, sa), (_, ab, lb, sb) = pts[i], pts[i + 1]
    top1 = aa + (ab - aa) * (x - xs[i]) / (xs[i + 1] - xs[i])
    return Expected(round(top1, 2), "extrapolated", (la, lb), tuple(dict.fromkeys((sa, sb))))


__all__ = ["RULE", "Expected", "expected_top1", "published_points"]
