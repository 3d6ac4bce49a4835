"""Shared fixtures: keep every test off the real user cache; one tiny host profile per session."""

from __future__ import annotations

import shutil

import pytest

RANGE = ["--phi-min", "-4", "--phi-max", "-3"]  # the φ range the tiny profile covers


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("EDGEFIT_HOME", str(tmp_path_factory.mktemp("edgefit-home")))


def tiny_suite():
    """Small models of three families (and per-dimension variations), timed briefly: enough to fit a predictor."""
    from pipeline.fit.calibrate import SuiteEntry

    return tuple(SuiteEntry(f, p) for f in ("efficientnet", "mobilenetv2", "resnet18") for p in (-4.0, -3.5, -3.0)) + (
        SuiteEntry("efficientnet", dims=(-4, -4, -2)), SuiteEntry("resnet18", dims=(-4, -3, -4)),
        SuiteEntry("efficientnet", dims=(-3, -4, -3)), SuiteEntry("mobilenetv2", dims=(-4, -4, -2)),
    )


def tiny_timing():
    from pipeline.measure.settings import TimingSettings

    return TimingSettings(warmup=2, min_repeats=8, min_time_s=0.1)


@pytest.fixture(scope="session")
def tiny_profile(tmp_path_factory):
    """A measured fp32 host profile at 1 thread over the tiny suite (calibrated once per test session)."""
    from pipeline.fit.calibrate import calibrate
    from pipeline.predict.targets import load_target

    out = tmp_path_factory.mktemp("profile") / "host.json"
    calibrate(load_target("host"), "fp32", threads=1, out=out, suite=tiny_suite(), settings=tiny_timing())
    return out


@pytest.fixture
def host_profile(tiny_profile):
    """The tiny profile installed as this machine's fp32, 1-thread host profile (in the isolated home)."""
    from pipeline.predict.targets import host_profile_path

    dest = host_profile_path("fp32", 1)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(tiny_profile, dest)
    return dest


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run fastest on one thread, and a shared 2-core machine thrashes with more."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
