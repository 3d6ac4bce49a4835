"""``deploy scaling``: the named α, β, γ that ``--scaling NAME`` knows, and saving new ones."""

from __future__ import annotations

import click

from pipeline.cli.options import json_option
from pipeline.cli.output import emit
from pipeline.cli.render import table


def list_text(rows: list[dict]) -> str:
    from pipeline.core.scaling import flops_factor

    shown = [{**r, "flops": f"{flops_factor(r['alpha'], r['beta'], r['gamma']):.3f}"} for r in rows]
    return table(shown, [("name", "name"), ("alpha", "α"), ("beta", "β"), ("gamma", "γ"), ("flops", "α·β²·γ²"),
                         ("kind", "kind"), ("source", "source")])


@click.group()
def scaling() -> None:
    """Named scalings (α, β, γ) for --scaling NAME on fit, train, describe, predict, grid and study."""


@scaling.command("list")
@json_option()
def list_(as_json):
    """Reference scalings (efficientnet, dollar-fast) and the ones saved in $EDGEFIT_HOME/scalings.json."""
    from pipeline.core.scalings import list_scalings

    emit([s.to_dict() for s in list_scalings()], as_json, list_text)


@scaling.command()
@click.argument("name")
@click.option("--from", "source", default=None, metavar="RUN",
              help="Take α, β, γ from a grid run (its winner) or a fit run: a directory or its grid.json/fit.json.")
@click.option("--alpha", type=click.FloatRange(min=0, min_open=True), default=None)
@click.option("--beta", type=click.FloatRange(min=0, min_open=True), default=None)
@click.option("--gamma", type=click.FloatRange(min=0, min_open=True), default=None)
@click.option("--force", is_flag=True, help="Replace a saved scaling of the same name.")
@json_option()
def save(name, source, alpha, beta, gamma, force, as_json):
    """Save α, β, γ as NAME in the user config ($EDGEFIT_HOME/scalings.json)."""
    from pipeline.core.scalings import lookup, save_scaling

    given = [v is not None for v in (alpha, beta, gamma)]
    if not ((source is not None and not any(given)) or (source is None and all(given))):
        raise click.UsageError("give --from RUN, or all three of --alpha, --beta and --gamma.")
    if source is not None:
        found = lookup(source)
        alpha, beta, gamma, where = found.alpha, found.beta, found.gamma, found.source
    else:
        where = "--alpha/--beta/--gamma"
    path = save_scaling(name, alpha, beta, gamma, where, force=force)
    emit({"name": name, "alpha": alpha, "beta": beta, "gamma": gamma, "source": where, "config": str(path)}, as_json,
         lambda d: f"saved {d['name']}: α={d['alpha']:g} β={d['beta']:g} γ={d['gamma']:g} (from {d['source']}) "
                   f"in {d['config']}")
