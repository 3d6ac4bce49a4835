"""``deploy fit``: the largest model that fits the budget, exported, measured and verified."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.cli.options import (
    agent_options,
    fraction_option,
    json_option,
    named_scaling,
    percent_option,
    percentage_points_option,
    precision_option,
    scaling_options,
    targets_dir_option,
    threads_option,
)
from pipeline.cli.output import emit, log, progress_bar
from pipeline.cli.render import si, table
from pipeline.core.budget import Budget
from pipeline.core.names import FAMILY_NAMES
from pipeline.core.units import Duration, Size


def fit_text(d: dict) -> str:
    m, p = d["measured"], d["predicted"]
    lat = (f"measured p50 {m['latency_ms']:.2f} ms (p90 {m['latency_ms_p90']:.2f}) on {m['device']}" if m else
           f"PREDICTED {p['latency_ms']:.2f} ms from a {p['provenance']} profile (not measured)")
    err = ("unknown (the search used the unknown-error margin)" if p["heldout_error_pct"] is None
           else f"{p['heldout_error_pct']:g}% ({p.get('error_case') or 'leave-one-out'})")
    rows = [{**f, "fits": "yes" if f.get("fits") else "no", "chosen": "<-" if f["phi"] == d["phi"] else ""}
            for f in d["frontier"]]
    cols = [("phi", "φ"), ("resolution", "res"), ("latency_ms", "pred ms"), ("memory_mb", "MiB"), ("fits", "fits"),
            ("chosen", "")]
    pd, sc = d["search"].get("per_dimension"), d.get("scaling")
    extra = []
    if sc and sc.get("name") != "efficientnet":
        extra.append(f"  scaling α={sc['alpha']:g} β={sc['beta']:g} γ={sc['gamma']:g} ({sc['name'] or sc['source']})")
    if pd:
        c, f = pd["compound"], pd["chosen"]
        util = (f"utilisation {c['utilisation']:.0%} -> {f['utilisation']:.0%} ({pd['basis']})"
                if c["utilisation"] is not None and f["utilisation"] is not None else "")
        extra.append(f"  per-dimension: φ_d={f['phi_depth']:g} φ_w={f['phi_width']:g} φ_r={f['phi_resolution']:g} "
                     f"from compound φ={c['phi_resolution']:g} (res {c['resolution']} -> {f['resolution']}, width "
                     f"x{c['width_multiplier']:.3f} -> x{f['width_multiplier']:.3f}); {util}")
    return "\n".join([
        f"{d['family']} φ={d['phi']:g} (resolution {d['resolution']}, {si(d['params'])} params, {si(d['macs'])} MACs)"
        f" for {d['target']} ({d['precision']})",
        f"  {lat}; predictor held-out error {err}",
        *extra,
        f"  verified: latency {d['verified']['latency']}, memory {d['verified']['memory']}",
        f"  next larger rejected: {d['search']['reason_next_rejected']}",
        f"  run directory: {d['run_dir']}", "", table(rows, cols), *_family_choice_text(d)])


def _family_choice_text(d: dict) -> list[str]:
    """--family auto: each family's pick side by side (the rule is in fit.json and report.md)."""
    choice = d.get("family_choice")
    if not choice:
        return []
    rows = [{"family": p["family"] + (" <- chosen" if p["family"] == choice["chosen"] else ""),
             "phi": "-" if p["phi"] is None else f"{p['phi']:g}", "res": p["resolution"] or "-",
             "ms": "-" if not p["fits"] else f"{p['predicted_latency_ms']:.2f}",
             "top1": "-" if not p["fits"] else f"{p['expected_top1']:.1f} ({p['expected_how']})"} for p in
            choice["families"]]
    return ["", "families (expected ImageNet top-1 at the size predicted to fit):",
            table(rows, [("family", "family"), ("phi", "φ"), ("res", "res"), ("ms", "pred ms"),
                         ("top1", "expected top-1 %")])]


@click.command()
@click.option("--target", "target_name", required=True, help="Target device (see `deploy targets`).")
@click.option("--latency", type=Duration(), default=None, help="Latency budget, e.g. 20ms, 500us, 0.1s.")
@click.option("--memory", type=Size(), default=None, help="Peak memory budget, e.g. 256MB, 1GiB.")
@click.option("--family", type=click.Choice((*FAMILY_NAMES, "auto")), default="efficientnet", show_default=True,
              help="Model family; auto: search every family and choose by expected ImageNet top-1 at the size that "
                   "fits (docs: README, fit --family auto).")
@precision_option()
@click.option("--percentile", type=click.Choice(["50", "90", "99"]), default="50", show_default=True,
              help="Latency statistic the budget applies to.")
@click.option("--phi-min", type=float, default=None, help="Smallest φ to consider (default -4).")
@click.option("--phi-max", type=float, default=None, help="Largest φ to consider (default 4).")
@scaling_options
@click.option("--search", "search_mode", type=click.Choice(["compound", "per-dimension"]), default="compound",
              show_default=True, help="per-dimension: after the compound pick, raise resolution, then width, "
                                      "into the budget the compound step left unused.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run directory (default runs/<target>-<timestamp>).")
@click.option("--force", is_flag=True, help="Replace a non-empty --out once the new run succeeds.")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), default=None,
              help="State dict for the chosen architecture.")
@click.option("--dynamic-batch", is_flag=True, help="Export with a dynamic batch dimension.")
@agent_options("Measurement agent URL of a remote device (http://HOST:PORT).")
@threads_option()
@targets_dir_option
@click.option("--data", default=None, help="Labelled set to train and verify on: DIR, FILE.npz or builtin:digits.")
@click.option("--train-epochs", type=click.IntRange(min=1), default=None, help="Train the chosen model this long.")
@click.option("--nproc", type=click.IntRange(min=1), default=1, show_default=True,
              help="Train with this many data-parallel processes (as `deploy train --nproc`).")
@click.option("--teacher", type=click.Path(exists=True), default=None, help="Checkpoint to distil from.")
@click.option("--init-from", type=click.Path(exists=True), default=None, help="Checkpoint to fine-tune from.")
@fraction_option("--min-accuracy", default=None, help="Fail (exit 4) when the trained model's top-1 is below this")
@click.option("--calibration-data", default=None, help="INT8 calibration set (default: --data, else builtin:digits).")
@click.option("--calibration-method", type=click.Choice(["minmax", "entropy", "percentile"]), default=None,
              help="INT8 calibration method [default: the family's tuned one, see bench/results/int8_speedup.md].")
@click.option("--calibration-samples", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--int8-exclude", multiple=True, help="Keep this node in float (repeatable).")
@percentage_points_option("--int8-max-drop-pp", "--int8-max-drop", "int8_max_drop_pp", default=1.0,
                          help="Largest top-1 drop of the INT8 model below fp32")
@percent_option("--noise-margin", default=Budget().noise_margin_pct, max_open=50,
                help="A measured latency or memory this close under its budget counts as over it")
@json_option("Print fit.json to stdout (progress goes to stderr).")
def fit(target_name, latency, memory, family, precision, percentile, phi_min, phi_max, alpha, beta, gamma,
        scaling_name, search_mode, out, force, weights,
        dynamic_batch, agent, agent_token_file, accept_device, threads, targets_dir, data, train_epochs, nproc, teacher,
        init_from, min_accuracy, calibration_data, calibration_method, calibration_samples, int8_exclude,
        int8_max_drop_pp, noise_margin, as_json):
    """Find the largest model that fits the budget, export it to ONNX, verify it on the device."""
    from pipeline.fit.auto import AUTO, fit_auto
    from pipeline.fit.flow import fit as fit_one
    from pipeline.fit.options import DataOptions, DeviceOptions, Int8Options, RunOptions, SearchOptions

    run = fit_auto if family == AUTO else fit_one

    result = run(target_name, Budget(latency, memory, int(percentile), noise_margin),
                 search_options=SearchOptions(family, phi_min, phi_max, named_scaling(alpha, beta, gamma, scaling_name),
                                              search_mode), precision=precision,
                 data=DataOptions(data, train_epochs, teacher, init_from, min_accuracy, nproc),
                 int8=Int8Options(calibration_data, calibration_method, calibration_samples, tuple(int8_exclude),
                                  int8_max_drop_pp),
                 run=RunOptions(out, force, weights, dynamic_batch),
                 device=DeviceOptions(threads, agent, targets_dir, agent_token_file, accept_device),
                 log=log, progress=progress_bar("calibrate"),
                 train_progress=progress_bar("train", unit="step", leave=False))
    emit(result, as_json, fit_text)
