"""The ``deploy`` command line: parse, call the library, print. No logic lives here.

Library failures are :class:`DeployError` subclasses; :class:`_Group` turns them into
one ``error: …`` line on stderr and the exit code the error carries (DESIGN.md).
"""

from __future__ import annotations

import json
import sys

import click

from . import __version__
from .errors import DeployError
from .fmt import mib, si, table


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
    from .scaling import DEFAULTS, CompoundScaling

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
    from .describe import describe as run

    data = run(family, phi, phi_depth, phi_width, phi_resolution, preset, num_classes, scaling_from(alpha, beta, gamma))
    emit(data, as_json, _describe_text)


def main() -> None:
    cli(prog_name="deploy")


if __name__ == "__main__":
    sys.exit(main())
