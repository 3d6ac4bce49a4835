"""``deploy build``: the TensorRT engine of a fit run, here or as a script for the device."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.cli.options import json_option, precision_option, targets_dir_option
from pipeline.cli.output import emit, log
from pipeline.cli.render import mib


def build_text(d: dict) -> str:
    opset = f"ONNX opset {d['onnx_opset']} (target max {d['max_onnx_opset']})" + (
        ", re-exported" if d.get("onnx_reexported") else "")
    if d["status"] == "built":
        size = mib(d["engine_bytes"]) if d.get("engine_bytes") else "?"
        gpu = d["gpu"]["name"] if d.get("gpu") else "no GPU (ahead-of-time build)"
        return "\n".join([
            f"built {d['path']} for {d['target']} ({d['precision']}) with {d['runtime']} {d['tensorrt_version']} "
            f"on {gpu}: {d.get('layers')} layers, {size}, {d.get('build_seconds')} s",
            f"  from {d['onnx']}, {opset}; sidecar {d['sidecar']}"])
    return "\n".join([
        f"wrote {d['script']}: run it on the {d['target']} to build {d['path']} ({d['precision']}) with trtexec",
        f"  why not here: {d['why_not_here']}",
        f"  from {d['onnx']}, {opset}",
        f"  then: deploy verify RUN_DIR --trtexec-times RUN_DIR/{d['trtexec']['times_file']}"])


@click.command("build")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@precision_option("Precision to build (default: the run's precision).")
@click.option("--on-device", is_flag=True, help="Do not build here; write build_on_device.sh for the device.")
@targets_dir_option
@json_option("Print the engine record (fit.json's 'engine') as JSON only.")
def build(run_dir, precision, on_device, targets_dir, as_json):
    """Build the TensorRT engine of a fit run here, or write build_on_device.sh to build it on the device."""
    from pipeline.engine.build import build_run

    emit(build_run(run_dir, precision, on_device, targets_dir, log=log), as_json, build_text)
