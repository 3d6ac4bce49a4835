"""``deploy predict``: predicted p50 latency and peak memory of a model on a target."""

from __future__ import annotations

import click

from pipeline.cli.options import (
    family_option,
    json_option,
    precision_option,
    scale_options,
    scaling_from,
    targets_dir_option,
    threads_option,
)
from pipeline.cli.output import emit
from pipeline.cli.render import si

_CASES = {
    "same family": "this family was timed on the target; leave-one-out over its records",
    "leave-one-family-out": "this family was never timed on the target; error of predicting each timed family "
                            "from the others",
    "leave-one-group-out": "an ONNX file costed node by node; error of the per-node model on each suite group "
                           "predicted with that group left out",
    "outside-calibration": "an ONNX file costed node by node, with too much of its time in nodes unlike anything "
                           "the calibration timed for the held-out error to apply",
    "unknown": "never timed on the target, and too few families in the profile to say how far off it can be",
}


def predict_text(d: dict) -> str:
    err = "unknown" if d["heldout_error_pct"] is None else f"±{d['heldout_error_pct']:g}% (p90, held-out)"
    lines = [
        f"{d['target']} ({d['precision']}): {d['latency_ms']:.2f} ms p50, {d['memory_mb']:.1f} MB peak",
        f"  provenance {d['provenance']}, error {err}, profile {d['profile']}",
        f"  error case: {d.get('error_case') or 'unknown'} ({_CASES.get(d.get('error_case'), _CASES['unknown'])})",
        f"  model: resolution {d['resolution']}, params {si(d['params'])}, MACs {si(d['macs'])}",
    ]
    if d.get("note"):
        lines.append(f"  note: {d['note']}")
    return "\n".join(lines)


@click.command()
@click.option("--target", "target_name", required=True, help="Target device (see `deploy targets`).")
@family_option
@scale_options
@click.option("--onnx", type=click.Path(exists=True, dir_okay=False), default=None, help="Predict for an ONNX file.")
@precision_option()
@threads_option()
@click.option("--num-classes", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--profile", "profile_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Profile to predict from instead of the target's.")
@targets_dir_option
@json_option()
def predict(target_name, family, phi, preset, phi_depth, phi_width, phi_resolution, alpha, beta, gamma, scaling_name,
            onnx, precision, threads, num_classes, profile_path, targets_dir, as_json):
    """Predict p50 latency and peak memory of a model on a target, with provenance and error."""
    from pipeline.core.scaling import family_for, resolve_scale
    from pipeline.predict.predictor import predict as run

    scaling = scaling_from(alpha, beta, gamma, scaling_name)  # the predictor sees only the architecture's cost
    model = onnx if onnx is not None else resolve_scale(phi, phi_depth, phi_width, phi_resolution, preset, scaling)
    data = run(target_name, model, family_for(family, preset), precision=precision, threads=threads,
               num_classes=num_classes, targets_dir=targets_dir, profile_path=profile_path)
    emit(data, as_json, predict_text)
