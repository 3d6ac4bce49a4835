"""The error edge: how a failure leaves the ``deploy`` process.

* A :class:`DeployError` is a failure the user can act on: one ``error: <message>`` line on
  stderr, exit with the error's ``exit_code`` (1 by default; 2, 3, 4 for usage, infeasible
  budget and failed verification).
* Any other exception is a bug in edgefit. The user still gets one line (the type and message)
  and exit 1, never a traceback they did not ask for; ``deploy --debug …`` prints the traceback.
* Ctrl-C is one line and exit 130, the shell's convention for SIGINT.
* click's own exceptions (usage errors: exit 2; ``--help``/``--version``: exit 0) pass through.
"""

from __future__ import annotations

import traceback

import click

from pipeline.core.errors import EXIT_ERROR, DeployError

EXIT_INTERRUPTED = 130


def one_line(text: str) -> str:
    """``text`` on one line: a multi-line message (e.g. from a third-party library) would break the
    one-``error:``-line contract that scripts grep for."""
    return " ".join(text.split())


def internal_error_line(exc: BaseException) -> str:
    """The single line shown for an unexpected exception."""
    what = type(exc).__name__ + (f": {one_line(str(exc))}" if str(exc).strip() else "")
    return f"error: internal error: {what} (this is a bug in edgefit; rerun with --debug for the traceback)"


class EdgeGroup(click.Group):
    """A click group whose subcommands' failures go through the error edge.

    The group must have a boolean ``debug`` parameter; it is parsed before any subcommand runs.
    """

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise  # click's own: usage errors (exit 2), --help, ctx.exit(); click.Exit is a RuntimeError
        except DeployError as exc:
            click.echo(f"error: {one_line(str(exc))}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("error: interrupted", err=True)
            ctx.exit(EXIT_INTERRUPTED)
        except Exception as exc:  # the edge: anything else is a bug, reported in one line
            if ctx.params.get("debug"):
                click.echo(traceback.format_exc().rstrip(), err=True)
            click.echo(internal_error_line(exc), err=True)
            ctx.exit(EXIT_ERROR)
