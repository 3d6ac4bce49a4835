"""The CLI's contracts: the error edge, shared option choices and units, and command wiring."""

from __future__ import annotations

import json
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner
from tinymodels import fit_record

from pipeline.cli import cli
from pipeline.cli.options import FRACTION, PERCENT, PERCENTAGE_POINTS
from pipeline.cli.verify import run_threads
from pipeline.core.errors import EXIT_INFEASIBLE
from pipeline.core.names import FAMILY_NAMES, PRECISIONS

FIT_NANO = ["fit", "--target", "jetson-nano", "--latency", "20ms", "--phi-min", "-4", "--phi-max", "-3"]


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def stderr_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


# --- the error edge ---------------------------------------------------------------------------------------------


@pytest.fixture
def fit_crashes(monkeypatch):
    """An unexpected exception inside the library, reached early by `deploy fit` (after the target loads)."""
    import pipeline.fit.flow

    def boom(*_a, **_k):
        raise RuntimeError("boom")

    monkeypatch.setattr(pipeline.fit.flow, "enumerate_architectures", boom)


def test_unexpected_exception_is_one_line_without_traceback(fit_crashes, tmp_path):
    r = invoke(*FIT_NANO, "--out", str(tmp_path / "run"))
    assert r.exit_code == 1
    lines = stderr_lines(r)
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: ") and "RuntimeError: boom" in lines[0] and "--debug" in lines[0]
    assert "Traceback" not in r.output
    assert not (tmp_path / "run").exists()


def test_debug_shows_the_traceback(fit_crashes, tmp_path):
    r = invoke("--debug", *FIT_NANO, "--out", str(tmp_path / "run"))
    assert r.exit_code == 1
    assert "Traceback" in r.stderr and "RuntimeError: boom" in r.stderr
    assert 'raise RuntimeError("boom")' in r.stderr  # the frame that raised, not just the type
    assert stderr_lines(r)[-1].startswith("error: internal error: RuntimeError: boom")


def test_keyboard_interrupt_is_one_line_exit_130(monkeypatch, tmp_path):
    import pipeline.fit.flow

    def interrupted(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline.fit.flow, "enumerate_architectures", interrupted)
    r = invoke(*FIT_NANO, "--out", str(tmp_path / "run"))
    assert r.exit_code == 130
    assert stderr_lines(r) == ["error: interrupted"]


def test_deploy_error_is_one_line_with_its_exit_code(tmp_path):
    r = invoke("fit", "--target", "jetson-nan", "--latency", "10ms", "--out", str(tmp_path / "run"))
    assert r.exit_code == 1
    assert len(stderr_lines(r)) == 1 and r.stderr.startswith("error: unknown target 'jetson-nan'")
    assert r.stdout == ""
    r = invoke("fit", "--target", "jetson-nano", "--latency", "1us", "--out", str(tmp_path / "run"))
    assert r.exit_code == EXIT_INFEASIBLE
    assert len(stderr_lines(r)) == 1 and r.stderr.startswith("error: ") and "Traceback" not in r.output


def test_click_usage_errors_still_exit_2():
    r = invoke("fit", "--target", "host", "--latency", "20")
    assert r.exit_code == 2 and "has no unit" in r.stderr
    assert invoke("no-such-command").exit_code == 2


# --- one source of names, as choices on every command ---------------------------------------------------------


def test_names_match_the_library():
    from pipeline.models import FAMILIES
    from pipeline.predict.profile import PRECISIONS as PROFILE_PRECISIONS
    from pipeline.runtimes.base import PRECISIONS as RUNTIME_PRECISIONS

    assert FAMILY_NAMES == tuple(FAMILIES)
    assert PRECISIONS == tuple(PROFILE_PRECISIONS) == tuple(RUNTIME_PRECISIONS)


def test_importing_the_cli_does_not_import_torch():
    code = "import sys, pipeline.cli; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


REQUIRED = {"describe": [], "predict": ["--target", "host"], "fit": ["--target", "host"],
            "train": ["--data", "builtin:digits"], "calibrate": ["--target", "host"], "build": ["{run}"]}


def _options(command: str) -> dict[str, click.Option]:
    return {p.name: p for p in cli.commands[command].params if isinstance(p, click.Option)}


@pytest.mark.parametrize("command", ["describe", "predict", "fit", "train"])
def test_family_is_a_choice_everywhere(command):
    opt = _options(command)["family"]
    extra = ("auto",) if command == "fit" else ()  # fit --family auto chooses among them
    assert isinstance(opt.type, click.Choice) and tuple(opt.type.choices) == FAMILY_NAMES + extra
    r = invoke(command, *REQUIRED[command], "--family", "vgg16")
    assert r.exit_code == 2 and "'vgg16' is not one of" in r.stderr


@pytest.mark.parametrize("command", ["predict", "fit", "calibrate", "build"])
def test_precision_is_a_choice_everywhere(command, tmp_path):
    opt = _options(command)["precision"]
    assert isinstance(opt.type, click.Choice) and tuple(opt.type.choices) == PRECISIONS
    args = [a.format(run=tmp_path) for a in REQUIRED[command]]
    r = invoke(command, *args, "--precision", "fp64")
    assert r.exit_code == 2 and "'fp64' is not one of 'fp32', 'fp16', 'int8'" in r.stderr


# --- units and option names --------------------------------------------------------------------------------------

UNITS = {"min_accuracy": FRACTION, "min_agreement": FRACTION, "alpha_kd": FRACTION,
         "max_drop_pp": PERCENTAGE_POINTS, "int8_max_drop_pp": PERCENTAGE_POINTS, "noise_margin": PERCENT}


def test_every_fraction_points_or_percent_option_states_its_unit():
    seen = set()
    for command in cli.commands:
        for name, opt in _options(command).items():
            if name in UNITS:
                assert opt.help.endswith(f"({UNITS[name]}).") and "%" not in opt.help, (command, name, opt.help)
                seen.add(name)
    assert seen == set(UNITS)


@pytest.mark.parametrize("flag", ["--int8-max-drop-pp", "--int8-max-drop"])
def test_int8_max_drop_keeps_its_old_name(flag):
    ctx = cli.commands["fit"].make_context("fit", ["--target", "host", flag, "0.5"])
    assert ctx.params["int8_max_drop_pp"] == 0.5
    assert invoke("fit", "--target", "host", "--latency", "1ms", flag, "-1").exit_code == 2


def test_train_device_is_renamed():
    r = invoke("train", "--data", "builtin:digits", "--phi", "-4", "--device", "cpu")
    assert r.exit_code == 2 and "--train-device" in r.stderr and "deploy verify" in r.stderr
    r = invoke("train", "--data", "builtin:digits", "--phi", "-4", "--train-device", "gpu")
    assert r.exit_code == 2 and "'gpu' is not one of 'cpu', 'cuda', 'auto'" in r.stderr
    ctx = cli.commands["train"].make_context("train", ["--data", "builtin:digits", "--train-device", "cpu"])
    assert ctx.params["train_device"] == "cpu" and "device" not in ctx.params
    assert "--train-device" in invoke("train", "--help").stdout and "--device" not in invoke("train", "--help").stdout


# --- verify --threads default --------------------------------------------------------------------------------------


def _fit_json(run, target: str):
    run.mkdir()
    (run / "fit.json").write_text(json.dumps(fit_record(target, family="efficientnet")))
    return run


def test_verify_threads_default_to_the_runs_target(tmp_path):
    assert run_threads(_fit_json(tmp_path / "pi", "raspberry-pi-4"), None) == 4
    assert run_threads(_fit_json(tmp_path / "host", "host"), None) == 1
    assert run_threads(_fit_json(tmp_path / "nano", "jetson-nano"), None) == 1  # a GPU board: the host's threads
    (tmp_path / "train-only").mkdir()
    assert run_threads(tmp_path / "train-only", None) == 1  # no fit.json: the host target


def test_verify_threads_follow_a_custom_target(tmp_path):
    from pipeline.predict.targets import load_target

    base = (load_target("raspberry-pi-4").path).read_text()
    targets = tmp_path / "targets"
    targets.mkdir()
    text = base.replace("threads = 4", "threads = 3").replace('"raspberry-pi-4"', '"my-board"')
    (targets / "my-board.toml").write_text(text)
    run = _fit_json(tmp_path / "run", "my-board")
    assert run_threads(run, str(targets)) == 3
    r = invoke("verify", str(run), "--data", "builtin:digits")
    assert r.exit_code == 1 and "unknown target 'my-board'" in r.stderr  # not silently the host's threads


def test_main_is_the_console_entry_point():
    code = "import sys; from pipeline.cli import main; sys.argv = ['deploy', '--version']; main()"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0 and "deploy (edgefit)" in out.stdout


def test_a_multi_line_message_stays_one_line(monkeypatch, tmp_path):
    import pipeline.fit.flow

    def crash(*_a, **_k):
        raise ValueError("first line\nsecond line")

    monkeypatch.setattr(pipeline.fit.flow, "enumerate_architectures", crash)
    r = invoke(*FIT_NANO, "--out", str(tmp_path / "run"))
    assert r.exit_code == 1
    assert stderr_lines(r) == ["error: internal error: ValueError: first line second line (this is a bug in edgefit; "
                               "rerun with --debug for the traceback)"]
