"""The one comparison API: per-precision tolerances, logit parity and accuracy comparison."""

import numpy as np
import pytest

from pipeline.core.compare import TOLERANCES, compare_accuracy, compare_logits, tolerance
from pipeline.core.errors import DeployError, UsageError


def test_tolerance_overrides_only_what_is_given():
    t = tolerance("fp32", max_drop_pp=0.5, min_agreement=None)
    assert t.max_drop_pp == 0.5 and t.min_agreement == TOLERANCES["fp32"].min_agreement
    assert t.max_abs == TOLERANCES["fp32"].max_abs


@pytest.mark.parametrize("kw, match", [
    ({"max_drop": 1.0}, "unknown tolerance 'max_drop'"),
    ({"min_agreement": 99.5}, "fraction in \\[0, 1\\]"),
    ({"max_drop_pp": -1.0}, ">= 0"),
])
def test_bad_tolerances_are_refused(kw, match):
    with pytest.raises(UsageError, match=match):
        tolerance("fp32", **kw)


def test_unknown_precision_names_the_known_ones():
    with pytest.raises(DeployError, match="fp16"):
        tolerance("bf16")


def test_logit_parity_is_relative_to_the_logit_scale():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((8, 10)) * 100  # logits around 100: an error of 5e-3 is 5e-5 of the scale
    ok = compare_logits(ref, ref + 5e-3, tolerance("fp32"))
    assert ok and ok.logit_scale == pytest.approx(np.abs(ref).max())
    bad = compare_logits(ref, ref + 5e-2, tolerance("fp32"))
    assert not bad and any("max_abs_err" in f for f in bad.failures)


def test_logit_parity_catches_a_swapped_class_and_non_finite_output():
    ref = np.eye(4) * 10
    swapped = ref[:, [1, 0, 2, 3]]
    res = compare_logits(ref, swapped, tolerance("int8"))  # int8 has no max_abs limit, but top-1 and cosine
    assert not res and any("top1_agreement" in f for f in res.failures)
    assert not compare_logits(ref, np.full_like(ref, np.nan), tolerance("int8"))


def test_accuracy_comparison_with_labels():
    ref = np.eye(10)[np.arange(100) % 10]
    labels = np.arange(100) % 10
    got = ref.copy()
    got[:3] = np.roll(got[:3], 1, axis=1)  # 3 of 100 now wrong
    res = compare_accuracy(ref, got, labels, tolerance("fp32", min_agreement=0.0), names=("torch", "onnx"))
    assert res.reference_accuracy == 1.0 and res.accuracy == pytest.approx(0.97) and res.drop_pp == pytest.approx(3.0)
    assert not res and "accuracy drop 3.000 pp (torch 1.0000 -> onnx 0.9700) > max_drop_pp 0.1" in res.failures[0]
    assert compare_accuracy(ref, got, labels, tolerance("int8", max_drop_pp=5.0, min_agreement=0.9))


def test_accuracy_comparison_without_labels_uses_the_reference():
    ref = np.eye(5)
    res = compare_accuracy(ref, ref, None, tolerance("fp32"), names=("fp32", "int8"))
    assert res and res.labels == "fp32 predictions" and res.agreement == 1.0


def test_mismatched_shapes_are_an_error():
    with pytest.raises(ValueError, match="shape"):
        compare_logits(np.zeros((2, 3)), np.zeros((2, 4)), tolerance("fp32"))
