"""``deploy package``: a finished run's model as an asset a mobile app's build can ship.

Steps (:func:`package_run`):

1. Read the run (:mod:`pipeline.package.source`): its ``model.onnx``, precision, preprocessing,
   labels and the provenance of its latency, memory and accuracy.
2. Put the preprocessing spec and the labels into the model's ``metadata_props``.
3. Convert: ``.ort`` with the Fixed optimization style for the platform (``arm`` for Android,
   iOS and ARM Linux), or keep ``.onnx``. Either way the reduced-build operator list comes from
   the ``.ort`` conversion, since that is what a reduced ONNX Runtime build is made from.
4. Check mobile usability per execution provider (NNAPI, CoreML); one summary line to the log.
5. Write ``labels.txt`` (when the run knows its classes), ``INTEGRATION.md`` and the sealed
   ``manifest.json`` with the sha256 of every other file, then the zip or folder, atomically.

Nothing in a package depends on where or when it was made (no absolute paths, no timestamps
of its own: ``measured.when`` is the measurement's time), so the same run and flags give the same
bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core.errors import DeployError, UnknownName
from pipeline.core.io import sha256_bytes
from pipeline.package.integration import PLATFORMS

FORMATS = ("ort", "onnx")
# ONNX Runtime's converter knows "arm" and "amd64"; every platform edgefit packages for runs on ARM.
TARGET_PLATFORM = {"android": "arm", "ios": "arm", "linux-arm64": "arm"}
OUTPUTS_MEANING = "logits (before softmax), one per class, in labels.txt order"


@dataclass(frozen=True)
class PackageResult:
    """What ``deploy package`` wrote; ``to_dict()`` is its ``--json`` output."""

    out: Path
    platform: str
    format: str
    files: dict[str, str]  # name -> sha256 (manifest.json included)
    usability: dict[str, Any]
    usability_line: str
    manifest: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"package": str(self.out), "platform": self.platform, "format": self.format, "files": self.files,
                "usability": self.usability, "manifest": self.manifest}


def default_out(run_dir: Path, platform: str) -> Path:
    return run_dir / f"package-{platform}.zip"


def _static_inputs(onnx_bytes: bytes) -> bytes:
    """The model with a batch of 1 where its first input dimension is symbolic; any other symbolic dim is refused."""
    import onnx

    model = onnx.load_from_string(onnx_bytes)
    changed = False
    for inp in model.graph.input:
        for i, d in enumerate(inp.type.tensor_type.shape.dim):
            if d.HasField("dim_value") and d.dim_value > 0:
                continue
            if i != 0:
                raise DeployError(f"model input '{inp.name}' has a dynamic dimension {i}; a mobile package needs a "
                                  "static input shape (re-export with a fixed resolution).")
            d.Clear()
            d.dim_value = 1
            changed = True
    if not changed:
        return onnx_bytes
    from onnxruntime.tools.onnx_model_utils import fix_output_shapes

    fix_output_shapes(model)
    return model.SerializeToString()


def package_run(run_dir: str | Path, platform: str, fmt: str = "ort", out: str | Path | None = None,
                force: bool = False, log: Callable[[str], None] = lambda m: None) -> PackageResult:
    """Package ``run_dir``'s model for ``platform`` as ``fmt`` into ``out`` (a ``.zip`` or a folder)."""
    import onnx

    from pipeline import __version__
    from pipeline.package.archive import check_output, write_package
    from pipeline.package.integration import integration_md
    from pipeline.package.manifest import MANIFEST, preprocess_spec, seal, with_metadata
    from pipeline.package.ort import convert_to_ort, usability, usability_summary
    from pipeline.package.source import read_run

    if platform not in PLATFORMS:
        raise UnknownName("platform", platform, list(PLATFORMS))
    if fmt not in FORMATS:
        raise UnknownName("format", fmt, list(FORMATS))
    run = Path(run_dir)
    out_path = Path(out) if out is not None else default_out(run, platform)
    check_output(out_path, force)  # before the slow work: an existing output is refused at once
    src = read_run(run)
    source_bytes = src.model_path.read_bytes()
    pre = preprocess_spec(src.preprocess, src.preprocess_source)
    labels = list(src.classes) if src.classes else None
    onnx_bytes = with_metadata(_static_inputs(source_bytes), pre, labels, __version__)
    log(f"converting {src.model_path.name} for {platform} ({TARGET_PLATFORM[platform]}, Fixed optimization style)")
    conversion = convert_to_ort(onnx_bytes, TARGET_PLATFORM[platform])
    report = usability(onnx_bytes)
    line = usability_summary(report)
    log(line)
    model_name = f"model.{fmt}"
    graph = onnx.load_from_string(onnx_bytes).graph
    files: dict[str, bytes] = {
        model_name: conversion.model if fmt == "ort" else onnx_bytes,
        "required_operators.config": conversion.required_operators.encode("utf-8"),
        "usability.json": _json_bytes(report),
    }
    if labels is not None:
        files["labels.txt"] = ("\n".join(labels) + "\n").encode("utf-8")
    manifest = _manifest(src, platform, fmt, model_name, pre, labels, report, conversion, graph,
                         sha256_bytes(source_bytes), __version__)
    files["INTEGRATION.md"] = integration_md(manifest, platform).encode("utf-8")
    manifest["files"] = {name: sha256_bytes(data) for name, data in sorted(files.items())}
    files[MANIFEST] = seal(manifest)
    written = write_package(files, out_path, force)
    return PackageResult(out=written, platform=platform, format=fmt,
                         files={name: sha256_bytes(data) for name, data in sorted(files.items())},
                         usability=report, usability_line=line, manifest=manifest)


def _json_bytes(data: Any) -> bytes:
    import json

    return (json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")


def _manifest(src, platform: str, fmt: str, model_name: str, pre: dict, labels: list[str] | None, report: dict,
              conversion, graph, source_sha: str, version: str) -> dict[str, Any]:
    from pipeline.package.manifest import MANIFEST_FORMAT, MANIFEST_VERSION, tensor_spec
    from pipeline.package.source import accuracy_entry, latency_entry, memory_entry
    from pipeline.record.schema import SCHEMA_VERSION

    rec = src.record
    budget = rec.get("budget") if src.kind == "fit" else None
    return {
        "format": MANIFEST_FORMAT,
        "manifest_version": MANIFEST_VERSION,
        "edgefit_version": version,
        "schema_version": SCHEMA_VERSION,
        "platform": platform,
        "model": {"file": model_name, "format": fmt, "family": src.family, "precision": src.precision,
                  "run_precision": src.run_precision,
                  "scale": src.scale, "resolution": pre["resolution"],
                  "params": rec.get("params"), "macs": rec.get("macs")},
        "source": {"run": src.run_dir.name, "kind": src.kind, "onnx": src.model_path.name,
                   "onnx_sha256": source_sha, "weights": rec.get("weights")},
        "onnxruntime": {"version": conversion.converter_version, "optimization_style": conversion.optimization_style,
                        "optimization_level": conversion.optimization_level,
                        "target_platform": conversion.target_platform,
                        "converted": fmt == "ort"},
        "target": rec.get("target") if src.kind == "fit" else None,
        "budget": budget,
        "latency": latency_entry(src),
        "memory": memory_entry(src),
        "accuracy": accuracy_entry(src),
        "verified": rec.get("verified") if src.kind == "fit" else None,
        "inputs": [s | {"layout": "NCHW"} for s in tensor_spec(graph.input)],
        "outputs": tensor_spec(graph.output),
        "outputs_meaning": OUTPUTS_MEANING if labels else OUTPUTS_MEANING.replace(", in labels.txt order", ""),
        "preprocess": pre,
        "labels": {"file": "labels.txt", "count": len(labels)} if labels else None,
        "usability": {name: {k: r[k] for k in ("partitions", "supported_pct", "suitability")}
                      for name, r in report.items()},
    }


__all__ = ["FORMATS", "PackageResult", "TARGET_PLATFORM", "default_out", "package_run"]
