import math

import pytest

from pipeline.core.errors import InvalidScale, PresetNotFound
from pipeline.core.scaling import (
    PRESETS,
    CompoundScaling,
    make_divisible,
    preset,
    resolve_scale,
    round_repeats,
    round_resolution,
)


@pytest.mark.parametrize(
    "value, expected",
    [
        (32.0, 32), (35.2, 32), (36.0, 40),  # nearest multiple of 8 (ties round up)
        (16 * 0.5, 8), (3.0, 8),  # never below the divisor
        (44.0, 48), (43.9, 40),
        (76.0, 80),  # 72 would be < 90% of 76? no: 72/76=0.947 -> nearest is 80 anyway
        (85.0, 88), (84.0, 88),
        (1280 * 1.1, 1408),
        (24 * 0.62, 16),  # 14.88 -> 16
        (20.0, 24),
        (60.0, 64),  # nearest of 56/64 is 64
        (57.5, 56),
    ],
)
def test_make_divisible_table(value, expected):
    assert make_divisible(value) == expected
    assert make_divisible(value) % 8 == 0
    assert make_divisible(value) >= 0.9 * value


def test_make_divisible_never_below_ninety_percent():
    # 8.9 would round down to 8 (< 90% of 8.9 = 8.01? no) -> pick a case that trips the rule
    # with divisor 16: 23.9 -> nearest 16 is 16, which is < 0.9*23.9=21.5, so it must bump to 32
    assert make_divisible(23.9, 16) == 32


@pytest.mark.parametrize(
    "n, d, expected", [(1, 1.0, 1), (2, 1.1, 3), (4, 1.0, 4), (3, 0.5, 2), (1, 0.1, 1), (4, 0.2, 1), (2, 3.1, 7)]
)
def test_round_repeats(n, d, expected):
    assert round_repeats(n, d) == expected


@pytest.mark.parametrize("r, expected", [(224, 224), (257.6, 256), (260.0, 264), (20, 32), (31.9, 32), (100, 104)])
def test_round_resolution(r, expected):
    assert round_resolution(r) == expected


def test_compound_uses_alpha_beta_gamma():
    s = CompoundScaling().compound(1.0)
    assert s.depth == pytest.approx(1.2) and s.width == pytest.approx(1.1)
    assert s.resolution == round_resolution(224 * 1.15)
    assert s.phi == s.phi_depth == s.phi_width == s.phi_resolution == 1.0


def test_negative_phi_scales_down():
    s = CompoundScaling().compound(-2.0)
    assert s.depth < 1 and s.width < 1 and s.resolution < 224


def test_custom_constants():
    s = CompoundScaling(alpha=2.0, beta=1.0, gamma=1.0).compound(1.0)
    assert (s.depth, s.width, s.resolution) == (2.0, 1.0, 224)
    with pytest.raises(InvalidScale):
        CompoundScaling(alpha=0.0)


def test_per_dimension_mode():
    s = CompoundScaling().per_dimension(2, -1, 0)
    assert s.phi is None
    assert s.depth == pytest.approx(1.44) and s.width == pytest.approx(1 / 1.1) and s.resolution == 224


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 12.5, -13, "x"])
def test_absurd_phi_is_rejected(bad):
    with pytest.raises(InvalidScale):
        CompoundScaling().compound(bad)


def test_presets_table():
    assert set(PRESETS) == {f"b{i}" for i in range(8)} | {f"lite{i}" for i in range(5)}
    b7 = preset("B7")
    assert (b7.width, b7.depth, b7.resolution, b7.dropout) == (2.0, 3.1, 600, 0.5)
    with pytest.raises(PresetNotFound, match="b0, b1"):
        preset("b8")


def test_resolve_scale_exclusive():
    with pytest.raises(InvalidScale):
        resolve_scale(phi=1.0, preset_name="b1")
    assert resolve_scale(phi_width=1.0).phi is None
    assert resolve_scale().phi == 0.0
    assert math.isclose(resolve_scale(phi=2).depth, 1.44)
