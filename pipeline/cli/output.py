"""How results and progress reach the terminal: results on stdout, progress and logs on stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable

import click


def emit(data, as_json: bool, human: Callable) -> None:
    """Print ``data`` as JSON (and nothing else) or through the ``human`` formatter."""
    click.echo(json.dumps(data, indent=2, sort_keys=False) if as_json else human(data))


def key_values(d: dict) -> str:
    """``key: value`` lines: the human form of a flat summary."""
    return "\n".join(f"{k}: {v}" for k, v in d.items())


def log(msg: str) -> None:
    """Library log lines go to stderr, so ``--json`` output on stdout stays parseable."""
    click.echo(msg, err=True)


def progress_bar(label: str, unit: str = "model", leave: bool = True) -> Callable[[int, int, str], None]:
    """A tqdm bar on stderr driven by the library's ``progress(i, n, what)`` callbacks."""
    from tqdm import tqdm

    state: dict = {}

    def update(i: int, n: int, what: str) -> None:
        bar = state.get("bar") or state.setdefault(
            "bar", tqdm(total=n, desc=label, unit=unit, file=sys.stderr, leave=leave))
        bar.n = i
        bar.set_postfix_str(what, refresh=False)
        bar.refresh()
        if i >= n:
            bar.close()

    return update


def bar_log(msg: str) -> None:
    """A log line printed above a live tqdm bar (``tqdm.write``) so the two do not garble each other."""
    from tqdm import tqdm

    tqdm.write(msg, file=sys.stderr)
