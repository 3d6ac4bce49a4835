"""Datasets, the seeded split, Preprocess, and every bad-input error (tiny real files in tmp_path)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from pipeline.core.errors import DataInvalid, DataNotFound, DeployError
from pipeline.data.datasets import (
    DIGITS_RESOLUTION,
    Preprocess,
    batches,
    load_dataset,
    load_image_folder,
    load_npz,
)


def write_png(path, size=(10, 12), mode="RGB", value=128):
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    arr = np.full((size[1], size[0], channels), value, np.uint8).squeeze()
    Image.fromarray(arr, mode=mode).save(path)
    return path


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "imgs"
    for i in range(3):
        write_png(root / "cat" / f"{i}.png", size=(10 + i, 12), value=40 * i)
        write_png(root / "dog" / f"{i}.png", size=(16, 16), mode="L", value=200 - 10 * i)
    write_png(root / "dog" / "rgba.png", mode="RGBA")
    (root / "dog" / "notes.txt").write_text("not an image, ignored")
    (root / "cat" / ".DS_Store").write_bytes(b"\0\1")
    return root


# --- builtin:digits and the split ---------------------------------------------------------------


def test_digits_loads_with_gray_preprocess():
    ds = load_dataset("builtin:digits")
    assert len(ds) == 1797 and ds.classes == tuple(str(i) for i in range(10))
    assert ds.default_resolution == DIGITS_RESOLUTION
    pp = ds.default_preprocess(32)
    assert pp.color == "gray" and pp.input_max == 16.0
    x = pp(ds.images([0, 1, 2]))
    assert tuple(x.shape) == (3, 3, 32, 32)
    assert np.allclose(x[:, 0].numpy(), x[:, 2].numpy())  # gray replicated to 3 channels


def test_split_is_seeded_stratified_and_disjoint():
    ds = load_dataset("builtin:digits")
    a, b = ds.split(0.2, 0), ds.split(0.2, 0)
    assert np.array_equal(a.train, b.train) and np.array_equal(a.val, b.val)
    assert not set(a.train) & set(a.val) and len(a.train) + len(a.val) == len(ds)
    assert set(ds.labels[a.val]) == set(range(10))  # every class is validated
    assert abs(len(a.val) / len(ds) - 0.2) < 0.01
    assert not np.array_equal(ds.split(0.2, 1).val, a.val)
    with pytest.raises(DataInvalid, match="val_fraction"):
        ds.split(1.0)


def test_shuffled_batches_are_deterministic_per_epoch():
    ds = load_dataset("builtin:digits")
    pp = ds.default_preprocess(16)
    idx = ds.split().train
    first = [i for i, _, _ in batches(ds, idx, pp, 100, shuffle=True, seed=3, epoch=1)]
    again = [i for i, _, _ in batches(ds, idx, pp, 100, shuffle=True, seed=3, epoch=1)]
    other = [i for i, _, _ in batches(ds, idx, pp, 100, shuffle=True, seed=3, epoch=2)]
    assert all(np.array_equal(p, q) for p, q in zip(first, again))
    assert not np.array_equal(first[0], other[0])
    assert sorted(np.concatenate(first)) == sorted(idx)


# --- Preprocess ----------------------------------------------------------------------------------


def test_preprocess_round_trips_through_json():
    pp = Preprocess(resolution=48, color="gray", input_max=16.0, mean=(0.1, 0.2, 0.3), std=(0.5, 0.6, 0.7),
                    resize="bicubic")
    back = Preprocess.from_dict(json.loads(json.dumps(pp.to_dict())))
    assert back == pp and back.with_resolution(64).resolution == 64


def test_preprocess_steps():
    pp = Preprocess(resolution=4, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    white = np.full((1, 8, 8, 3), 255, np.uint8)
    assert np.allclose(pp(white).numpy(), 1.0)  # (1 - 0.5) / 0.5
    rgba = np.zeros((2, 4, 4, 4), np.uint8)
    assert tuple(pp(rgba).shape) == (2, 3, 4, 4)  # alpha dropped
    mixed = [np.zeros((5, 7, 3), np.uint8), np.zeros((9, 9, 1), np.uint8)]
    assert tuple(pp(mixed).shape) == (2, 3, 4, 4)  # different sizes, one transform
    gray = Preprocess(resolution=4, color="gray", mean=(0, 0, 0), std=(1, 1, 1))
    red = np.zeros((1, 4, 4, 3), np.uint8)
    red[..., 0] = 255
    assert np.allclose(gray(red).numpy(), 0.299, atol=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    ({"resolution": 0}, "resolution"),
    ({"resolution": 32, "color": "cmyk"}, "color"),
    ({"resolution": 32, "resize": "lanczos"}, "resize"),
    ({"resolution": 32, "std": (1, 0, 1)}, "std"),
    ({"resolution": 32, "mean": (1, 2)}, "mean"),
    ({"resolution": 32, "input_max": 0}, "input_max"),
])
def test_preprocess_rejects_bad_values(kwargs, match):
    with pytest.raises(DataInvalid, match=match):
        Preprocess(**kwargs)


def test_preprocess_from_dict_rejects_unknown_keys():
    with pytest.raises(DataInvalid, match="unknown keys: crop"):
        Preprocess.from_dict({"resolution": 32, "crop": 0.875})


# --- .npz ----------------------------------------------------------------------------------------


def test_npz_layouts_and_dtypes(tmp_path):
    rng = np.random.default_rng(0)
    y = np.array([3, 7, 3, 7, 3, 7])
    nhwc = tmp_path / "nhwc.npz"
    np.savez(nhwc, x=rng.integers(0, 256, (6, 5, 5, 3), dtype=np.uint8), y=y)
    ds = load_npz(nhwc)
    assert ds.classes == ("3", "7") and list(ds.labels) == [0, 1, 0, 1, 0, 1]
    assert ds.default_preprocess(8).input_max == 255.0
    nchw = tmp_path / "nchw.npz"
    np.savez(nchw, x=rng.random((6, 3, 5, 7), dtype=np.float32), y=y, classes=np.array(["a", "b", "c", "d", "e",
                                                                                         "f", "g", "h"]))
    with pytest.raises(DataInvalid, match="'classes' have no images"):
        load_npz(nchw)  # names 8 classes, only labels 3 and 7 are used
    np.savez(nchw, x=rng.random((6, 3, 5, 7), dtype=np.float32), y=y - 3 * (y == 3) - 6 * (y == 7),
             classes=np.array(["zero", "one"]))
    ds = load_npz(nchw)
    assert ds.classes == ("zero", "one") and ds.images([0]).shape == (1, 5, 7, 3)
    nhw = tmp_path / "nhw.npz"
    np.savez(nhw, x=rng.random((6, 5, 5)) * 16, y=y)
    ds = load_npz(nhw)
    assert ds.color == "gray" and ds.input_max > 1
    assert tuple(ds.default_preprocess(8)(ds.images([0, 1])).shape) == (2, 3, 8, 8)


@pytest.mark.parametrize("arrays, match", [
    ({"x": np.zeros((4, 5, 5, 3), np.uint8)}, "no array 'y'"),
    ({"y": np.zeros(4)}, "no array 'x'"),
    ({"x": np.zeros((4, 5, 5, 3), np.uint8), "y": np.array([0, 1, 0])}, "'x' has 4 images but array 'y' has 3"),
    ({"x": np.zeros((4, 5, 5, 3), np.uint8), "y": np.zeros(4, int)}, "single class"),
    ({"x": np.zeros((4, 5), np.uint8), "y": np.array([0, 1, 0, 1])}, "must be N×H×W×C"),
    ({"x": np.zeros((4, 5, 5, 7), np.uint8), "y": np.array([0, 1, 0, 1])}, "channel"),
    ({"x": -np.ones((4, 5, 5, 3)), "y": np.array([0, 1, 0, 1])}, "negative"),
    ({"x": np.full((4, 5, 5, 3), np.nan), "y": np.array([0, 1, 0, 1])}, "NaN"),
    ({"x": np.zeros((4, 5, 5, 3), np.uint8), "y": np.array([0.5, 1, 0, 1])}, "integer class labels"),
    ({"x": np.zeros((4, 5, 5, 3), np.uint8), "y": np.array([0, 1, 0, 2]), "classes": np.array(["a", "b"])},
     "outside 0..1"),
])
def test_npz_errors_name_the_array(tmp_path, arrays, match):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataInvalid, match=match) as err:
        load_dataset(path)
    assert "bad.npz" in str(err.value)


def test_npz_not_a_zip(tmp_path):
    path = tmp_path / "junk.npz"
    path.write_bytes(b"definitely not a zip")
    with pytest.raises(DataInvalid, match="junk.npz is not a readable"):
        load_dataset(path)


# --- ImageFolder ---------------------------------------------------------------------------------


def test_image_folder_loads_and_decodes_lazily(folder):
    ds = load_dataset(folder)
    assert ds.kind == "imagefolder" and ds.classes == ("cat", "dog")
    assert list(ds.labels) == [0, 0, 0, 1, 1, 1, 1]  # .txt and hidden files ignored
    imgs = ds.images([0, 3, 6])
    assert [im.shape for im in imgs] == [(12, 10, 3), (16, 16, 1), (12, 10, 3)]
    x = ds.default_preprocess(8)(imgs)
    assert tuple(x.shape) == (3, 3, 8, 8)
    assert ds.fingerprint() == load_image_folder(folder).fingerprint()


def test_corrupt_image_is_named(folder):
    bad = folder / "cat" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(DataInvalid, match="broken.png is corrupt"):
        load_dataset(folder)


def test_truncated_image_fails_at_decode_naming_it(folder):
    path = folder / "cat" / "0.png"
    ds = load_dataset(folder)
    path.write_bytes(path.read_bytes()[:40])  # truncated after loading
    with pytest.raises(DataInvalid, match="0.png"):
        ds.images([0])


def test_empty_class_is_named(folder):
    (folder / "bird").mkdir()
    (folder / "bird" / "readme.md").write_text("no images here")
    with pytest.raises(DataInvalid, match="class folder .*bird is empty"):
        load_dataset(folder)


def test_single_class_folder(tmp_path):
    write_png(tmp_path / "only" / "a" / "0.png")
    with pytest.raises(DataInvalid, match="single class \\(a\\)"):
        load_dataset(tmp_path / "only")


def test_folder_without_classes(tmp_path):
    write_png(tmp_path / "flat" / "0.png")
    with pytest.raises(DataInvalid, match="no class sub-folders"):
        load_dataset(tmp_path / "flat")


def test_missing_paths_and_unknown_builtin(tmp_path):
    with pytest.raises(DataNotFound, match="does not exist"):
        load_dataset(tmp_path / "nowhere")
    with pytest.raises(DataNotFound, match="builtin:digits"):
        load_dataset("builtin:mnist")
    (tmp_path / "file.csv").write_text("1,2")
    with pytest.raises(DataInvalid, match="neither a directory"):
        load_dataset(tmp_path / "file.csv")
    assert issubclass(DataInvalid, DeployError) and DataInvalid.exit_code == 1
