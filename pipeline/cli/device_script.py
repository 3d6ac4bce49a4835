"""``deploy device-script OUT.py``: write the device runner (one stdlib-only file) to copy onto a device."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.cli.output import log


@click.command("device-script")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
def device_script(out: Path) -> None:
    """Write the device runner (edgefit_device.py: info, measure, run, serve) to OUT.py."""
    from pipeline.core.io import atomic_write
    from pipeline.measure.runner import runner_path

    atomic_write(out, runner_path().read_bytes())
    out.chmod(0o755)
    log(f"wrote {out}; on the device: python3 {out.name} info | measure MODEL.onnx | run BUNDLE | serve")
