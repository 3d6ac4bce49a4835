"""The ``deploy`` command line: parse, call the library, print. No logic lives here.

Library failures are :class:`DeployError` subclasses; :class:`_Group` turns them into
one ``error: …`` line on stderr and the exit code the error carries (DESIGN.md).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from pipeline import __version__
from pipeline.cli.render import mib, si, table
from pipeline.core.errors import DeployError
from pipeline.core.units import Duration, Size


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except DeployError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)


def emit(data: dict, as_json: bool, human) -> None:
    """Print ``data`` as JSON (and nothing else) or through the ``human`` formatter."""
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=False))
    else:
        click.echo(human(data))


def scale_options(f):
    """--phi / --preset / --phi-depth/--phi-width/--phi-resolution and α, β, γ."""
    opts = [
        click.option("--phi", type=float, default=None, help="Compound coefficient φ (may be negative)."),
        click.option("--preset", default=None, help="Published EfficientNet preset b0..b7."),
        click.option("--phi-depth", type=float, default=None, help="Per-dimension φ for depth."),
        click.option("--phi-width", type=float, default=None, help="Per-dimension φ for width."),
        click.option("--phi-resolution", type=float, default=None, help="Per-dimension φ for resolution."),
        click.option("--alpha", type=float, default=None, help="Depth base α (default 1.2)."),
        click.option("--beta", type=float, default=None, help="Width base β (default 1.1)."),
        click.option("--gamma", type=float, default=None, help="Resolution base γ (default 1.15)."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def scaling_from(alpha, beta, gamma):
    from pipeline.core.scaling import DEFAULTS, CompoundScaling

    pick = lambda v, k: DEFAULTS[k] if v is None else v  # noqa: E731
    return CompoundScaling(pick(alpha, "alpha"), pick(beta, "beta"), pick(gamma, "gamma"))


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="deploy (edgefit)")
def cli() -> None:
    """edgefit: fit compound-scaled networks to an edge device's latency and memory budget."""


def _describe_text(d: dict) -> str:
    name = f"preset {d['preset']}" if d["preset"] else (
        f"φ={d['phi']:g}" if d["phi"] is not None
        else f"φ_d={d['phi_depth']:g} φ_w={d['phi_width']:g} φ_r={d['phi_resolution']:g}")
    head = [
        f"{d['family']} ({name})",
        f"  depth x{d['depth_multiplier']:.3f}  width x{d['width_multiplier']:.3f}  resolution {d['resolution']}",
        f"  params {si(d['params'])}  MACs {si(d['macs'])}  weights {mib(d['weight_bytes']['fp32'])} (fp32)"
        f"  peak activations {mib(d['activation_bytes'])}",
        "",
    ]
    rows = [{**s, "macs": si(s["macs"])} for s in d["stages"]]
    cols = [("stage", "stage"), ("blocks", "blocks"), ("channels", "channels"), ("resolution", "resolution"),
            ("macs", "MACs")]
    return "\n".join(head) + table(rows, cols)


@cli.command()
@click.option("--family", default="efficientnet", show_default=True,
              help="Model family: efficientnet, mobilenetv2, resnet18, resnet50.")
@scale_options
@click.option("--num-classes", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON only.")
def describe(family, phi, preset, phi_depth, phi_width, phi_resolution, alpha, beta, gamma, num_classes, as_json):
    """Show the architecture and static cost of a scaled model (nothing is timed)."""
    from pipeline.cost.describe import describe as run

    data = run(family, phi, phi_depth, phi_width, phi_resolution, preset, num_classes, scaling_from(alpha, beta, gamma))
    emit(data, as_json, _describe_text)


def _targets_text(rows: list[dict]) -> str:
    table_rows = [{
        **t,
        "precisions": ", ".join(t["precisions"]),
        "memory": f"{t['memory_mb']} MB",
        "profile": ", ".join(f"{p}: {v['status']}" for p, v in t["profiles"].items()),
    } for t in rows]
    cols = [("name", "name"), ("kind", "kind"), ("runtime", "runtime"), ("precisions", "precisions"),
            ("memory", "memory"), ("threads", "threads"), ("profile", "profile")]
    legend = ("\nmeasured: timed on the device · published: copied from cited sources, not timed here · "
              "roofline: datasheet estimate, nothing timed · none: no profile yet")
    return table(table_rows, cols) + "\n" + legend


@cli.command()
@click.option("--targets-dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="Extra folder of <name>.toml targets; its files override built-ins of the same name.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON only.")
def targets(targets_dir, as_json):
    """List deployment targets and the status of their latency profiles."""
    from pipeline.predict.targets import describe_targets

    emit(describe_targets(targets_dir), as_json, _targets_text)


def _progress_bar(label: str):
    """A tqdm bar on stderr driven by ``progress(i, n, what)`` callbacks from the library."""
    from tqdm import tqdm

    state: dict = {}

    def update(i: int, n: int, what: str) -> None:
        bar = state.get("bar") or state.setdefault("bar", tqdm(total=n, desc=label, unit="model", file=sys.stderr))
        bar.n = i
        bar.set_postfix_str(what)
        bar.refresh()
        if i >= n:
            bar.close()

    return update


@cli.command()
@click.option("--target", "target_name", required=True, help="Target to calibrate (run this on that device).")
@click.option("--precision", default=None, help="Precision to calibrate (default: the target's default).")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Runtime threads (default: the target's).")
@click.option("--quick", is_flag=True, help="Small suite: about a minute (fp32; int8 about two) instead of up to ten.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write the profile here.")
@click.option("--targets-dir", type=click.Path(exists=True, file_okay=False), default=None)
@click.option("--json", "as_json", is_flag=True, help="Print the profile summary as JSON.")
def calibrate(target_name, precision, threads, quick, out, targets_dir, as_json):
    """Measure a calibration suite on this machine and write a measured profile."""
    from pipeline.fit.calibrate import calibrate as run
    from pipeline.predict.predictor import Predictor
    from pipeline.predict.targets import load_target

    profile = run(load_target(target_name, targets_dir), precision, threads, quick, out, _progress_bar("calibrate"))
    fitted = Predictor.fit(profile)
    summary = {"profile": str(profile.path), "target": profile.target, "records": len(profile.records),
               "threads": profile.device.get("threads"), "seconds": profile.method.get("seconds"),
               "heldout_error_pct": fitted.heldout_error_pct,
               "memory_heldout_error_pct": fitted.memory_heldout_error_pct, "method": fitted.method}
    emit(summary, as_json, lambda d: "\n".join(f"{k}: {v}" for k, v in d.items()))


def _predict_text(d: dict) -> str:
    err = "unknown" if d["heldout_error_pct"] is None else f"±{d['heldout_error_pct']:g}% (p90, held-out)"
    lines = [
        f"{d['target']} ({d['precision']}): {d['latency_ms']:.2f} ms p50, {d['memory_mb']:.1f} MB peak",
        f"  provenance {d['provenance']}, error {err}, profile {d['profile']}",
        f"  model: resolution {d['resolution']}, params {si(d['params'])}, MACs {si(d['macs'])}",
    ]
    if d.get("note"):
        lines.append(f"  note: {d['note']}")
    return "\n".join(lines)


@cli.command()
@click.option("--target", "target_name", required=True)
@click.option("--family", default="efficientnet", show_default=True)
@scale_options
@click.option("--onnx", type=click.Path(exists=True, dir_okay=False), default=None, help="Predict for an ONNX file.")
@click.option("--precision", default=None)
@click.option("--threads", type=click.IntRange(min=1), default=None)
@click.option("--num-classes", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--profile", "profile_path", type=click.Path(exists=True, dir_okay=False), default=None)
@click.option("--targets-dir", type=click.Path(exists=True, file_okay=False), default=None)
@click.option("--json", "as_json", is_flag=True, help="Print JSON only.")
def predict(target_name, family, phi, preset, phi_depth, phi_width, phi_resolution, alpha, beta, gamma, onnx,
            precision, threads, num_classes, profile_path, targets_dir, as_json):
    """Predict p50 latency and peak memory of a model on a target, with provenance and error."""
    from pipeline.core.scaling import resolve_scale
    from pipeline.predict.predictor import predict as run

    if any(v is not None for v in (alpha, beta, gamma)):
        raise click.UsageError("predict uses the default α, β, γ; custom constants are for describe/fit.")
    model = onnx if onnx is not None else resolve_scale(phi, phi_depth, phi_width, phi_resolution, preset)
    data = run(target_name, model, family, precision=precision, threads=threads, num_classes=num_classes,
               targets_dir=targets_dir, profile_path=profile_path)
    emit(data, as_json, _predict_text)


def _fit_text(d: dict) -> str:
    m, p = d["measured"], d["predicted"]
    lat = (f"measured p50 {m['latency_ms']:.2f} ms (p90 {m['latency_ms_p90']:.2f}) on {m['device']}" if m else
           f"PREDICTED {p['latency_ms']:.2f} ms from a {p['provenance']} profile (not measured)")
    err = "unknown" if p["heldout_error_pct"] is None else f"{p['heldout_error_pct']:g}%"
    rows = [{**f, "fits": "yes" if f.get("fits") else "no", "chosen": "<-" if f["phi"] == d["phi"] else ""}
            for f in d["frontier"]]
    cols = [("phi", "φ"), ("resolution", "res"), ("latency_ms", "pred ms"), ("memory_mb", "MiB"), ("fits", "fits"),
            ("chosen", "")]
    return "\n".join([
        f"{d['family']} φ={d['phi']:g} (resolution {d['resolution']}, {si(d['params'])} params, {si(d['macs'])} MACs)"
        f" for {d['target']} ({d['precision']})",
        f"  {lat}; predictor held-out error {err}",
        f"  verified: latency {d['verified']['latency']}, memory {d['verified']['memory']}",
        f"  next larger rejected: {d['search']['reason_next_rejected']}",
        f"  run directory: {d['run_dir']}", "", table(rows, cols)])


@cli.command()
@click.option("--target", "target_name", required=True, help="Target device (see `deploy targets`).")
@click.option("--latency", type=Duration(), default=None, help="Latency budget, e.g. 20ms, 500us, 0.1s.")
@click.option("--memory", type=Size(), default=None, help="Peak memory budget, e.g. 256MB, 1GiB.")
@click.option("--family", default="efficientnet", show_default=True,
              type=click.Choice(["efficientnet", "mobilenetv2", "resnet18", "resnet50"]))
@click.option("--precision", default=None, help="fp32 | fp16 | int8 (default: the target's first).")
@click.option("--percentile", type=click.Choice(["50", "90", "99"]), default="50", show_default=True,
              help="Latency statistic the budget applies to.")
@click.option("--phi-min", type=float, default=None, help="Smallest φ to consider (default -4).")
@click.option("--phi-max", type=float, default=None, help="Largest φ to consider (default 4).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run directory (default runs/<target>-<timestamp>).")
@click.option("--force", is_flag=True, help="Replace a non-empty --out once the new run succeeds.")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), default=None,
              help="State dict for the chosen architecture.")
@click.option("--dynamic-batch", is_flag=True, help="Export with a dynamic batch dimension.")
@click.option("--agent", default=None, help="Measurement agent URL of a remote device.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Runtime threads (default: the target's).")
@click.option("--targets-dir", type=click.Path(exists=True, file_okay=False), default=None)
@click.option("--data", default=None, help="Labelled set to train and verify on: DIR, FILE.npz or builtin:digits.")
@click.option("--train-epochs", type=click.IntRange(min=1), default=None, help="Train the chosen model this long.")
@click.option("--teacher", type=click.Path(exists=True), default=None, help="Checkpoint to distil from.")
@click.option("--init-from", type=click.Path(exists=True), default=None, help="Checkpoint to fine-tune from.")
@click.option("--min-accuracy", type=click.FloatRange(0, 1), default=None, help="Fail (exit 4) below this top-1.")
@click.option("--calibration-data", default=None, help="INT8 calibration set (default: --data, else builtin:digits).")
@click.option("--calibration-method", type=click.Choice(["minmax", "entropy", "percentile"]), default="percentile",
              show_default=True)
@click.option("--calibration-samples", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--int8-exclude", multiple=True, help="Keep this node in float (repeatable).")
@click.option("--int8-max-drop", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Largest INT8 accuracy drop in percentage points.")
@click.option("--noise-margin", type=click.FloatRange(0, 50, max_open=True), default=2.0, show_default=True,
              help="Percent: a measured latency or memory this close under its budget counts as over it.")
@click.option("--json", "as_json", is_flag=True, help="Print fit.json to stdout (progress goes to stderr).")
def fit(target_name, latency, memory, family, precision, percentile, phi_min, phi_max, out, force, weights,
        dynamic_batch, agent, threads, targets_dir, data, train_epochs, teacher, init_from, min_accuracy,
        calibration_data, calibration_method, calibration_samples, int8_exclude, int8_max_drop, noise_margin,
        as_json):
    """Find the largest model that fits the budget, export it to ONNX, verify it on the device."""
    from pipeline.fit.flow import fit as run
    from pipeline.fit.options import DataOptions, DeviceOptions, Int8Options, RunOptions, SearchOptions
    from pipeline.fit.search import Budget

    log = lambda msg: click.echo(msg, err=True)  # noqa: E731
    result = run(target_name, Budget(latency, memory, int(percentile), noise_margin),
                 search_options=SearchOptions(family, phi_min, phi_max), precision=precision,
                 data=DataOptions(data, train_epochs, teacher, init_from, min_accuracy),
                 int8=Int8Options(calibration_data, calibration_method, calibration_samples, tuple(int8_exclude),
                                  int8_max_drop),
                 run=RunOptions(out, force, weights, dynamic_batch), device=DeviceOptions(threads, agent, targets_dir),
                 log=log, progress=_progress_bar("calibrate"))
    emit(result, as_json, _fit_text)


def _train_text(d: dict) -> str:
    s = d["scale"]
    name = f"preset {s['preset']}" if s.get("preset") else (
        f"φ={s['phi']:g}" if s.get("phi") is not None
        else f"φ_d={s['phi_depth']:g} φ_w={s['phi_width']:g} φ_r={s['phi_resolution']:g}")
    res = f"resolution {d['resolution']}" + (
        f" (nominal {d['nominal_resolution']})" if d["resolution"] != d["nominal_resolution"] else "")
    lines = [f"{d['family']} ({name}), {res}, {si(d['params'])} params, {d['num_classes']} classes",
             f"  val accuracy {d['val_accuracy']:.4f} (best epoch {d['best_epoch']} of {d['epochs']}) "
             f"on {d['dataset']['name']}, {d['seconds']:.1f} s on {d['device']}",
             f"  checkpoint {d['checkpoint']}"]
    if d.get("transfer"):
        from pipeline.train.trainer import TransferReport

        lines.append("  " + TransferReport(**d["transfer"]).summary())
    if d.get("teacher"):
        t = d["teacher"]
        lines.append(f"  distilled from {t['family']} {t['checkpoint']} (val {t['val_accuracy']:.4f}), "
                     f"T={t['temperature']:g}, a={t['alpha_kd']:g}")
    return "\n".join(lines)


def _train_progress():
    """(progress, log) for the library: a tqdm bar over training steps on stderr, and log lines
    printed above the bar (``tqdm.write``) so the two do not garble each other."""
    from tqdm import tqdm

    state: dict = {}

    def update(i: int, n: int, what: str) -> None:
        bar = state.get("bar") or state.setdefault("bar", tqdm(total=n, desc="train", unit="step", file=sys.stderr,
                                                               leave=False))
        bar.n = i
        bar.set_postfix_str(what, refresh=False)
        bar.refresh()
        if i >= n:
            bar.close()

    def log(msg: str) -> None:
        tqdm.write(msg, file=sys.stderr)

    return update, log


@cli.command()
@click.option("--family", default="efficientnet", show_default=True,
              help="Model family: efficientnet, mobilenetv2, resnet18, resnet50.")
@scale_options
@click.option("--data", required=True, help="builtin:digits, an .npz file (x, y) or an image folder.")
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-2, show_default=True,
              help="Peak learning rate (AdamW, one-cycle schedule).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--resolution", type=click.IntRange(min=8), default=None,
              help="Train (and export) at this input size instead of the scale's; default: the dataset's "
                   "(builtin:digits: 32) or the scale's resolution. Recorded in the checkpoint.")
@click.option("--init-from", type=click.Path(exists=True), default=None,
              help="Checkpoint (or run dir) of another scale of the same family to start from.")
@click.option("--teacher", type=click.Path(exists=True), default=None,
              help="Checkpoint (or run dir) to distil from (any family/scale, same classes).")
@click.option("--temperature", type=click.FloatRange(min=0, min_open=True), default=4.0, show_default=True,
              help="Distillation temperature T.")
@click.option("--alpha-kd", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Distillation weight a: (1-a)·CE + a·T²·KL.")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda or auto.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run directory (default runs/train-<family>).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object (progress goes to stderr).")
def train(family, phi, preset, phi_depth, phi_width, phi_resolution, alpha, beta, gamma, data, epochs, batch_size,
          lr, seed, resolution, init_from, teacher, temperature, alpha_kd, device, out, as_json):
    """Train a scaled model on a labelled dataset; keep the best checkpoint (DIR/checkpoint.pt)."""
    from pipeline.core.scaling import resolve_scale
    from pipeline.train.trainer import TrainOptions
    from pipeline.train.trainer import train as run

    scale = resolve_scale(phi, phi_depth, phi_width, phi_resolution, preset, scaling_from(alpha, beta, gamma))
    progress, log = _train_progress()
    opts = TrainOptions(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, resolution=resolution,
                        init_from=init_from, teacher=teacher, temperature=temperature, alpha_kd=alpha_kd, device=device)
    result = run(family, scale, data, out_dir=out or Path("runs") / f"train-{family}", options=opts,
                 progress=progress, log=log)
    emit(result.to_dict(), as_json, _train_text)


def _verify_text(d: dict) -> str:
    t = d["thresholds"]
    return "\n".join([
        f"{'PASS' if d['passed'] else 'FAIL'}: accuracy on {d['dataset']} ({d['samples']} validation images)",
        f"  torch top-1 {d['torch_top1']:.4f}   onnx top-1 {d['onnx_top1']:.4f}   drop {d['drop_pp']:.3f} pp "
        f"(max {t['max_drop_pp']:g})",
        f"  agreement {d['agreement']:.4f} (min {t['min_agreement']:g})   max |logit diff| "
        f"{d['max_abs_logit_diff']:.3g}",
        f"  model {d['onnx']}",
    ] + [f"  failed: {f}" for f in d["failures"]])


@cli.command()
@click.argument("run_dir", type=click.Path(exists=True, path_type=Path))
@click.option("--data", default=None, help="The labelled dataset the checkpoint was trained on.")
@click.option("--trtexec-times", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Timings from trtexec --exportTimes on the device: recorded in fit.json as measured.")
@click.option("--trtexec-log", type=click.Path(exists=True, dir_okay=False), default=None,
              help="trtexec's log (names the device and TensorRT version).")
@click.option("--device", "device_name", default=None, help="Name of the device the timings came from.")
@click.option("--max-drop-pp", type=click.FloatRange(min=0), default=0.1, show_default=True,
              help="Largest allowed top-1 drop of ONNX below torch, in percentage points.")
@click.option("--min-agreement", type=click.FloatRange(0, 1), default=0.995, show_default=True,
              help="Smallest allowed top-1 agreement between torch and ONNX.")
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True, help="ONNX Runtime threads.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (also saved as verify.json).")
def verify(run_dir, data, trtexec_times, trtexec_log, device_name, max_drop_pp, min_agreement, threads, as_json):
    """Check accuracy (--data) and/or record device-measured latency (--trtexec-times); exit 4 on failure."""
    from pipeline.train.verify import verify_accuracy

    if data is None and trtexec_times is None:
        raise click.UsageError("give --data (accuracy) and/or --trtexec-times (device latency).")
    if trtexec_times is not None:
        from pipeline.engine.trtexec import record_trtexec_times

        measured = record_trtexec_times(run_dir, trtexec_times, device_name, log_file=trtexec_log,
                                        raise_on_failure=data is None)
        if data is None:
            emit(measured, as_json, lambda d: "\n".join(f"{k}: {v}" for k, v in d.items()))
            return
        click.echo(f"recorded measured latency from {trtexec_times}", err=True)
    report = verify_accuracy(run_dir, data, max_drop_pp=max_drop_pp, min_agreement=min_agreement, threads=threads)
    emit(report.to_dict(), as_json, _verify_text)
    report.raise_for_failure()


def _build_text(d: dict) -> str:
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


@cli.command("build")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--precision", default=None, help="fp32 | fp16 | int8 (default: the run's precision).")
@click.option("--on-device", is_flag=True, help="Do not build here; write build_on_device.sh for the device.")
@click.option("--targets-dir", type=click.Path(exists=True, file_okay=False), default=None)
@click.option("--json", "as_json", is_flag=True, help="Print the engine record (fit.json's 'engine') as JSON only.")
def build_cmd(run_dir, precision, on_device, targets_dir, as_json):
    """Build the TensorRT engine of a fit run here, or write build_on_device.sh to build it on the device."""
    from pipeline.engine.build import build_run

    log = lambda msg: click.echo(msg, err=True)  # noqa: E731
    emit(build_run(run_dir, precision, on_device, targets_dir, log=log), as_json, _build_text)


def main() -> None:
    cli(prog_name="deploy")


if __name__ == "__main__":
    sys.exit(main())
