"""``deploy describe``: architecture and static cost of a scaled model (nothing is timed)."""

from __future__ import annotations

import click

from pipeline.cli.options import family_option, json_option, named_scaling, scale_options
from pipeline.cli.output import emit
from pipeline.cli.render import mib, si, table


def scale_name(d: dict) -> str:
    """'preset b3', 'φ=1' or the per-dimension φs of a describe/train record."""
    if d.get("preset"):
        return f"preset {d['preset']}"
    if d.get("phi") is not None:
        return f"φ={d['phi']:g}"
    return f"φ_d={d['phi_depth']:g} φ_w={d['phi_width']:g} φ_r={d['phi_resolution']:g}"


def describe_text(d: dict) -> str:
    sc = d.get("scaling")
    head = [
        f"{d['family']} ({scale_name(d)})" + (f"  α={sc['alpha']:g} β={sc['beta']:g} γ={sc['gamma']:g}"
                                               f" ({sc['name'] or sc['source']})" if sc else ""),
        f"  depth x{d['depth_multiplier']:.3f}  width x{d['width_multiplier']:.3f}  resolution {d['resolution']}",
        f"  params {si(d['params'])}  MACs {si(d['macs'])}  weights {mib(d['weight_bytes']['fp32'])} (fp32)"
        f"  peak activations {mib(d['activation_bytes'])}",
        "",
    ]
    rows = [{**s, "macs": si(s["macs"])} for s in d["stages"]]
    cols = [("stage", "stage"), ("blocks", "blocks"), ("channels", "channels"), ("resolution", "resolution"),
            ("macs", "MACs")]
    return "\n".join(head) + table(rows, cols)


@click.command()
@family_option
@scale_options
@click.option("--num-classes", type=click.IntRange(min=1), default=1000, show_default=True)
@json_option()
def describe(family, phi, preset, phi_depth, phi_width, phi_resolution, alpha, beta, gamma, scaling_name, num_classes,
             as_json):
    """Show the architecture and static cost of a scaled model (nothing is timed)."""
    from pipeline.core.scaling import family_for
    from pipeline.cost.describe import describe as run

    named = named_scaling(alpha, beta, gamma, scaling_name)
    data = run(family_for(family, preset), phi, phi_depth, phi_width, phi_resolution, preset, num_classes,
               named.scaling())
    emit({**data, "scaling": None if preset else named.to_dict()}, as_json, describe_text)
