"""Option decorators shared by several commands, so a flag means the same thing everywhere.

Units are part of the contract: accuracies and agreements are fractions in [0, 1], accuracy
drops are percentage points, margins are percent. The unit helpers below append the unit to the
help text in one wording, so ``--help`` states it the same way on every command.
"""

from __future__ import annotations

from collections.abc import Callable

import click

from pipeline.core.names import FAMILY_NAMES, PRECISIONS

FRACTION = "fraction 0-1"
PERCENTAGE_POINTS = "percentage points"
PERCENT = "percent"


def _stack(*decorators: Callable) -> Callable:
    def apply(f):
        for d in reversed(decorators):
            f = d(f)
        return f

    return apply


def scaling_options(f):
    """--alpha/--beta/--gamma, or --scaling NAME: the compound-scaling constants (default EfficientNet's)."""
    return _stack(
        click.option("--alpha", type=float, default=None,
                     help="Depth base α (default 1.2, EfficientNet's)."),
        click.option("--beta", type=float, default=None,
                     help="Width base β (default 1.1)."),
        click.option("--gamma", type=float, default=None,
                     help="Resolution base γ (default 1.15)."),
        click.option("--scaling", "scaling_name", default=None, metavar="NAME",
                     help="Named α, β, γ: efficientnet, dollar-fast, one saved with `deploy grid --save-scaling` "
                          "(see `deploy scaling list`), or a grid/fit run directory (its scaling)."),
    )(f)


def scale_options(f):
    """--phi / --preset / --phi-depth/--phi-width/--phi-resolution and α, β, γ (or --scaling)."""
    return _stack(
        click.option("--phi", type=float, default=None, help="Compound coefficient φ (may be negative)."),
        click.option("--preset", default=None,
                     help="Published preset: EfficientNet b0..b7 or EfficientNet-Lite lite0..lite4."),
        click.option("--phi-depth", type=float, default=None, help="Per-dimension φ for depth."),
        click.option("--phi-width", type=float, default=None, help="Per-dimension φ for width."),
        click.option("--phi-resolution", type=float, default=None, help="Per-dimension φ for resolution."),
        scaling_options,
    )(f)


def named_scaling(alpha: float | None, beta: float | None, gamma: float | None, name: str | None = None):
    """The :class:`~pipeline.core.scalings.NamedScaling` of --scaling or --alpha/--beta/--gamma (never both)."""
    from pipeline.core.scalings import resolve

    return resolve(alpha, beta, gamma, name)


def scaling_from(alpha: float | None, beta: float | None, gamma: float | None, name: str | None = None):
    """The CompoundScaling of --scaling or --alpha/--beta/--gamma, each constant defaulting to EfficientNet's."""
    return named_scaling(alpha, beta, gamma, name).scaling()


def json_option(help: str = "Print JSON only."):
    return click.option("--json", "as_json", is_flag=True, help=help)


def targets_dir_option(f):
    return click.option("--targets-dir", type=click.Path(exists=True, file_okay=False), default=None,
                        help="Extra folder of <name>.toml targets; its files override built-ins of the same name.")(f)


def family_option(f):
    """--family; unset, it is the preset's family (lite0..lite4: efficientnet-lite), else efficientnet
    (resolve with :func:`pipeline.core.scaling.family_for`)."""
    return click.option("--family", type=click.Choice(FAMILY_NAMES), default=None,
                        help="Model family [default: efficientnet; efficientnet-lite for a lite preset].")(f)


def precision_option(help: str = "Precision (default: the target's first)."):
    return click.option("--precision", type=click.Choice(PRECISIONS), default=None, help=help)


def threads_option(help: str = "Runtime threads (default: the target's)."):
    return click.option("--threads", type=click.IntRange(min=1), default=None, help=help)


def fraction_option(*names: str, default: float | None, help: str):
    """A value in [0, 1] (an accuracy, an agreement, a weight)."""
    return click.option(*names, type=click.FloatRange(0, 1), default=default, show_default=default is not None,
                        help=f"{help} ({FRACTION}).")


def percentage_points_option(*names: str, default: float, help: str):
    """A difference of two accuracies, in percentage points (0.5 = half a point of top-1)."""
    return click.option(*names, type=click.FloatRange(min=0), default=default, show_default=True,
                        help=f"{help} ({PERCENTAGE_POINTS}).")


def percent_option(*names: str, default: float, max_open: float, help: str):
    """A relative margin in percent of a budget, in [0, max_open)."""
    return click.option(*names, type=click.FloatRange(0, max_open, max_open=True), default=default,
                        show_default=True, help=f"{help} ({PERCENT}).")


def _no_empty(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...] | None:
    """``--agent`` given no times is ``None`` (not an empty tuple), so "was an agent given?" stays ``is not None``."""
    return tuple(value) or None


def backend_options(f):
    """``--backend local|ray``, ``--ray-address``, ``--trial-cpus``: where grid and study run their points."""
    return _stack(
        click.option("--backend", type=click.Choice(["local", "ray"]), default="local", show_default=True,
                     help="Run the points here one by one, or as Ray tasks (pip install 'edgefit[distributed]')."),
        click.option("--ray-address", default=None, help="A running Ray cluster (HEAD:6379); default: a local Ray."),
        click.option("--trial-cpus", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
                     help="CPUs each Ray task declares."),
    )(f)


def agent_options(agent_help: str):
    """``--agent URL``, ``--agent-token-file F`` and ``--accept-device``: the same three on every command that
    measures on a device through its agent (fit, calibrate, verify)."""
    return _stack(
        click.option("--agent", multiple=True, callback=_no_empty, help=agent_help + " Repeat it (or give a file "
                     "of URLs, one per line) for a farm of identical devices: jobs go to whichever agent is free, "
                     "and one that stops answering is dropped and its jobs re-sent."),
        click.option("--agent-token-file", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="File holding the agent's token (default: $EDGEFIT_AGENT_TOKEN)."),
        click.option("--accept-device", is_flag=True,
                     help="Use the agent even when its device does not look like the target."),
    )

