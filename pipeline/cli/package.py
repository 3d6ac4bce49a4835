"""``deploy package RUN_DIR`` (make a mobile package) and ``deploy package verify PACKAGE`` (check one).

Exit codes: 0 done; 1 an error the message names (a run without a model, a model the converter
cannot handle, an existing output without ``--force``, a corrupt or altered package, naming the
file); 2 usage (an unknown platform or format); 4 a package whose model disagrees with its
manifest or with ``--run``'s model.
"""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.cli.options import json_option
from pipeline.cli.output import emit, log

PLATFORMS = ("android", "ios", "linux-arm64")  # pipeline.package.integration.PLATFORMS, without importing it


class DefaultCommandGroup(click.Group):
    """A group whose first argument, when it is not a subcommand, goes to a default command.

    ``deploy package RUN_DIR …`` packages; ``deploy package verify PKG`` verifies. A run directory
    literally named ``verify`` is reached as ``./verify``.
    """

    default_command = "create"

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or args[0] not in self.commands or args[0] == self.default_command:
            if not (args and args[0] in ("-h", "--help")):
                args = [self.default_command, *args]
        return super().parse_args(ctx, args)

    def format_usage(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write_usage(ctx.command_path, "RUN_DIR --platform android|ios|linux-arm64 [OPTIONS]")
        formatter.write_usage(ctx.command_path, "verify PACKAGE [--run RUN_DIR] [--json]")


def package_text(d: dict) -> str:
    m = d["manifest"]
    lat = m["latency"]
    latency = (f"{lat['p50_ms']} ms p50 measured on {lat['device']}" if lat.get("provenance") == "measured" else
               f"{lat['ms']} ms predicted (±{lat['error_pct']}%)" if lat.get("provenance") == "predicted" else
               "no latency (train run)")
    lines = [f"wrote {d['package']} for {d['platform']}: {m['model']['file']} ({m['model']['family']}, "
             f"{m['model']['precision']}, input {m['inputs'][0]['shape']}), {latency}"]
    lines += [f"  {name}  {digest[:16]}…" for name, digest in d["files"].items()]
    lines.append(f"  check it: deploy package verify {d['package']}")
    return "\n".join(lines)


def verify_text(d: dict) -> str:
    lines = [f"PASS: {d['package']}: {len(d['files'])} files intact, {d['model']} loads, "
             f"sample {d['sample']['input_shape']} -> {d['sample']['output_shape']}"]
    c = d.get("comparison")
    if c:
        lines.append(f"  matches {c['reference']} ({c['precision']}): max |diff| {c['max_abs_err']:.3g}, "
                     f"cosine {c['cosine_min']:.6f}, top-1 agreement {c['top1_agreement']:.3f} on {c['n']} samples")
    return "\n".join(lines)


@click.group("package", cls=DefaultCommandGroup)
def package() -> None:
    """Package a run's model for a mobile app (`deploy package RUN_DIR --platform P`), or verify a package."""


@package.command("create")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--platform", required=True, type=click.Choice(PLATFORMS), help="Where the app runs.")
@click.option("--format", "fmt", type=click.Choice(["ort", "onnx"]), default="ort", show_default=True,
              help="ort: ONNX Runtime's mobile format, optimized now (Fixed style); onnx: the model as exported.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="FILE.zip or a folder (default RUN_DIR/package-PLATFORM.zip).")
@click.option("--force", is_flag=True, help="Replace an existing output (only once the new package is complete).")
@json_option("Print what was written (files, sha256, usability, manifest) as JSON only.")
def create(run_dir, platform, fmt, out, force, as_json):
    """Package RUN_DIR's model, labels, preprocessing and provenance for PLATFORM."""
    from pipeline.package.build import package_run

    result = package_run(run_dir, platform, fmt, out, force=force, log=log)
    emit(result.to_dict(), as_json, package_text)


@package.command("verify")
@click.argument("package_path", metavar="PACKAGE", type=click.Path(path_type=Path))
@click.option("--run", "run_dir", type=click.Path(path_type=Path), default=None,
              help="The run the package was made from: its model.onnx must agree with the packaged model.")
@json_option("Print the checks as JSON only.")
def verify(package_path, run_dir, as_json):
    """Check a package: sha256 of every file, the model loads, a sample through its preprocessing, --run's model."""
    from pipeline.package.verify import verify_package

    emit(verify_package(package_path, run_dir).to_dict(), as_json, verify_text)
