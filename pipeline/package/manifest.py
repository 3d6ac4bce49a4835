"""The package's own files: ``manifest.json`` (sealed), the preprocessing spec, and the model's metadata.

**The preprocessing spec** (:func:`preprocess_spec`) is the run's
:class:`~pipeline.data.datasets.Preprocess` written out for an app developer: every field the
transform needs (resolution, resize method, colour, value range, mean/std, channel order, layout,
dtype) plus the steps in order, in words. :func:`preprocess_from_spec` reads it back, so
``deploy package verify`` applies exactly what the manifest says.

**The seal.** ``manifest.json`` lists the sha256 of every other file; to catch a change to the
manifest itself it carries ``manifest_sha256``, the sha256 of its own canonical text without
that key. The text is canonical (2-space indent, keys in written order, UTF-8, one final
newline), so :func:`unseal` can insist that the bytes are exactly what was written: any changed
byte is either invalid JSON, a non-canonical text, or a wrong hash.

**The model's metadata.** The same preprocessing spec and the labels go into the model's ONNX
``metadata_props`` under the ``edgefit.`` namespace (:data:`METADATA_KEYS`), as JSON, so an app
that only ships the model file can still read them (ONNX Runtime: ``session.getMetadata()``).
"""

from __future__ import annotations

import json
from typing import Any

from pipeline.core.errors import PackageCorrupt
from pipeline.core.io import sha256_bytes
from pipeline.data.datasets import Preprocess

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "edgefit-package"
MANIFEST_VERSION = 1
SEAL_KEY = "manifest_sha256"
METADATA_KEYS = {"preprocess": "edgefit.preprocess", "labels": "edgefit.labels", "version": "edgefit.version"}
LAYOUT = "NCHW"
_SPEC_KEYS = ("resolution", "resize", "color", "input_max", "mean", "std")


def preprocess_spec(pre: Preprocess, source: str) -> dict[str, Any]:
    """The preprocessing as an app must implement it: the fields, and the steps in order."""
    gray = pre.color == "gray"
    return {
        "resolution": pre.resolution,
        "resize": pre.resize,
        "align_corners": False,
        "antialias_when_shrinking": pre.resize != "nearest",
        "keep_aspect_ratio": False,
        "color": pre.color,
        "channel_order": "RGB",
        "input_max": pre.input_max,
        "value_range": [0.0, pre.input_max],
        "mean": list(pre.mean),
        "std": list(pre.std),
        "layout": LAYOUT,
        "dtype": "float32",
        "steps": [
            f"read the image as H×W×C numbers in [0, {pre.input_max:g}] and divide by {pre.input_max:g}",
            ("convert to luminance 0.299 R + 0.587 G + 0.114 B and repeat it in 3 channels" if gray else
             "keep R, G, B in that order (a gray image is repeated in 3 channels; alpha is dropped)"),
            f"resize to {pre.resolution}×{pre.resolution} ({pre.resize}, aspect ratio not kept, half-pixel centres"
            + (", anti-aliased when shrinking)" if pre.resize != "nearest" else ")"),
            "subtract mean[c] and divide by std[c] per channel",
            f"lay out as 1×3×{pre.resolution}×{pre.resolution} float32 ({LAYOUT})",
        ],
        "source": source,
    }


def preprocess_from_spec(spec: dict[str, Any]) -> Preprocess:
    """The :class:`Preprocess` a spec describes; a spec that is not one is a corrupt manifest."""
    try:
        return Preprocess.from_dict({k: spec[k] for k in _SPEC_KEYS})
    except (KeyError, TypeError, ValueError) as exc:
        raise PackageCorrupt(f"{MANIFEST}: 'preprocess' is not a valid preprocessing spec ({exc}).") from None
    except Exception as exc:  # DataInvalid from Preprocess's own checks
        raise PackageCorrupt(f"{MANIFEST}: 'preprocess' is invalid: {exc}") from None


def tensor_spec(values) -> list[dict[str, Any]]:
    """Name, static shape and dtype of ONNX graph inputs or outputs."""
    import onnx

    out = []
    for v in values:
        t = v.type.tensor_type
        out.append({"name": v.name, "shape": [d.dim_value if d.HasField("dim_value") else d.dim_param
                                              for d in t.shape.dim],
                    "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name})
    return out


def canonical_json(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")


def seal(manifest: dict[str, Any]) -> bytes:
    """The manifest's bytes, with ``manifest_sha256`` over its canonical text without that key."""
    body = {k: v for k, v in manifest.items() if k != SEAL_KEY}
    return canonical_json(body | {SEAL_KEY: sha256_bytes(canonical_json(body))})


def unseal(data: bytes) -> dict[str, Any]:
    """The manifest, if its bytes are exactly what :func:`seal` wrote; else :class:`PackageCorrupt`."""
    try:
        manifest = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PackageCorrupt(f"{MANIFEST} is not valid JSON ({exc}); the package is corrupt.") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise PackageCorrupt(f"{MANIFEST} is not an edgefit package manifest (no \"format\": \"{MANIFEST_FORMAT}\").")
    if manifest.get("manifest_version") != MANIFEST_VERSION:
        raise PackageCorrupt(f"{MANIFEST} has manifest_version {manifest.get('manifest_version')!r}; this edgefit "
                             f"reads version {MANIFEST_VERSION}.")
    if SEAL_KEY not in manifest or seal(manifest) != data:
        raise PackageCorrupt(f"{MANIFEST} was altered after packaging: its bytes do not match its "
                             f"{SEAL_KEY} seal.")
    return manifest


def with_metadata(onnx_bytes: bytes, preprocess: dict[str, Any], labels: list[str] | None, version: str) -> bytes:
    """The ONNX model with the preprocessing spec and labels in ``metadata_props`` (replacing edgefit's own keys)."""
    import onnx

    model = onnx.load_from_string(onnx_bytes)
    keep = [p for p in model.metadata_props if p.key not in METADATA_KEYS.values()]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    entries = {METADATA_KEYS["preprocess"]: json.dumps(preprocess, ensure_ascii=False),
               METADATA_KEYS["version"]: version}
    if labels is not None:
        entries[METADATA_KEYS["labels"]] = json.dumps(labels, ensure_ascii=False)
    for key, value in entries.items():
        model.metadata_props.add(key=key, value=value)
    return model.SerializeToString()


__all__ = ["LAYOUT", "MANIFEST", "MANIFEST_FORMAT", "MANIFEST_VERSION", "METADATA_KEYS", "SEAL_KEY", "canonical_json",
           "preprocess_from_spec", "preprocess_spec", "seal", "tensor_spec", "unseal", "with_metadata"]
