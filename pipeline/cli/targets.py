"""``deploy targets``: the deployment targets and the status of their latency profiles."""

from __future__ import annotations

import click

from pipeline.cli.options import json_option, targets_dir_option
from pipeline.cli.output import emit
from pipeline.cli.render import table

LEGEND = ("measured: timed on the device · published: copied from cited sources, not timed here · "
          "roofline: datasheet estimate, nothing timed · none: no profile yet")


def targets_text(rows: list[dict]) -> str:
    table_rows = [{
        **t,
        "precisions": ", ".join(t["precisions"]),
        "memory": f"{t['memory_mb']} MB",
        "profile": ", ".join(f"{p}: {v['status']}" for p, v in t["profiles"].items()),
    } for t in rows]
    cols = [("name", "name"), ("kind", "kind"), ("runtime", "runtime"), ("precisions", "precisions"),
            ("memory", "memory"), ("threads", "threads"), ("profile", "profile")]
    return table(table_rows, cols) + "\n\n" + LEGEND


@click.command()
@targets_dir_option
@json_option()
def targets(targets_dir, as_json):
    """List deployment targets and the status of their latency profiles."""
    from pipeline.predict.targets import describe_targets

    emit(describe_targets(targets_dir), as_json, targets_text)
