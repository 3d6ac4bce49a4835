"""builtin:shapes: rendered offline (sockets blocked), deterministic, labelled, and resolution carries information."""

from __future__ import annotations

import socket

import numpy as np
import pytest

from pipeline.core.errors import DataNotFound
from pipeline.data.datasets import load_dataset
from pipeline.data.shapes import CLASSES, ShapesSpec, render

SMALL = "builtin:shapes:samples=40,size=32"


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a socket fails the test: the loader must not download anything."""

    def refuse(*args, **kwargs):
        raise AssertionError("builtin:shapes tried to open a network connection")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_loader_runs_with_sockets_blocked_and_names_its_classes(no_network):
    ds = load_dataset(SMALL)
    assert len(ds) == 40 and ds.num_classes == 10
    assert ds.classes == CLASSES and ds.classes[:2] == ("circle-stripes", "circle-checks")
    assert np.bincount(ds.labels).tolist() == [4] * 10  # balanced
    x = ds.images(np.arange(3))
    assert x.shape == (3, 32, 32, 3) and x.dtype == np.uint8
    assert ds.name == "builtin:shapes:samples=40,size=32" and ds.kind == "builtin"
    split = ds.split()
    assert len(split.val) == 10 and set(ds.labels[split.val]) == set(range(10))  # one per class


def test_rendering_is_deterministic_and_seeded(no_network):
    a, b = load_dataset(SMALL), load_dataset("builtin:shapes:size=32,samples=40")  # option order does not matter
    assert a.name == b.name and a.fingerprint() == b.fingerprint()
    assert np.array_equal(a.images(np.arange(40)), b.images(np.arange(40)))
    render.cache_clear()  # rendered again from nothing: the same pixels
    assert np.array_equal(load_dataset(SMALL).images(np.arange(40)), a.images(np.arange(40)))
    other = load_dataset(SMALL + ",seed=1")
    assert not np.array_equal(other.images(np.arange(40)), a.images(np.arange(40)))
    assert ShapesSpec().name == "builtin:shapes"


@pytest.mark.parametrize("spec, match", [
    ("builtin:shapes:size=8", "size must be"),
    ("builtin:shapes:samples=5", "samples must be"),
    ("builtin:shapes:colour=red", "not one of size=N"),
    ("builtin:shapes:size=big", "must be an integer"),
    ("builtin:squares", "Known: builtin:digits, builtin:shapes"),
])
def test_bad_specs_say_what_is_wrong(spec, match):
    with pytest.raises(DataNotFound, match=match):
        load_dataset(spec)


def test_resolution_follows_the_scale_at_the_native_size():
    shapes = load_dataset(SMALL)
    assert shapes.base_resolution == 32
    assert shapes.resolution_for(224) == 32 and shapes.resolution_for(448) == 64  # φ=0 -> native size
    assert load_dataset("builtin:shapes:samples=20").resolution_for(144) == 40  # φ=-3 on the 64 px default
    assert load_dataset("builtin:digits").resolution_for(224) == 32  # digits: fixed


def test_resolution_carries_information():
    """The textures that tell classes apart are fine: an input at a third of the native size loses most of them."""
    import torch.nn.functional as F

    x, _ = render(ShapesSpec(size=48, samples=20))
    ds = load_dataset("builtin:shapes:samples=20,size=48")
    full = ds.default_preprocess(48)(x)
    small = F.interpolate(ds.default_preprocess(16)(x), size=(48, 48), mode="bilinear", align_corners=False)

    def fine_energy(t):  # what a 3x3 blur removes: the high-frequency part of the image
        return float((t - F.avg_pool2d(t, 3, 1, 1, count_include_pad=False)).pow(2).mean())

    assert fine_energy(small) < 0.3 * fine_energy(full)
