import json

import pytest
from click.testing import CliRunner

from pipeline import __version__
from pipeline.cli import cli

KEYS = {"family", "phi", "phi_depth", "phi_width", "phi_resolution", "depth_multiplier", "width_multiplier",
        "resolution", "params", "macs", "weight_bytes", "activation_bytes", "stages"}


def run(*args):
    return CliRunner().invoke(cli, list(args))


def test_version():
    r = run("--version")
    assert r.exit_code == 0 and __version__ in r.output


@pytest.mark.parametrize("cmd", [[], ["describe"]])
def test_help(cmd):
    r = run(*cmd, "--help")
    assert r.exit_code == 0 and "Usage" in r.output


def test_describe_compound_json():
    r = run("describe", "--family", "efficientnet", "--phi", "1.0", "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert KEYS <= set(d)
    assert d["phi"] == 1.0 and d["depth_multiplier"] == pytest.approx(1.2) and d["resolution"] == 256
    assert [s["stage"] for s in d["stages"]][0] == "stem" and d["stages"][-1]["stage"] == "head"
    assert {"stage", "blocks", "channels", "resolution", "macs"} <= set(d["stages"][1])


@pytest.mark.parametrize("name, params", [("b0", 5_288_548), ("b3", 12_233_232), ("b7", 66_347_960)])
def test_describe_preset(name, params):
    d = json.loads(run("describe", "--preset", name, "--json").output)
    assert d["params"] == params and d["phi"] is None and d["preset"] == name


def test_describe_per_dimension():
    r = run("describe", "--family", "resnet18", "--phi-depth", "1", "--phi-width", "0", "--phi-resolution", "-1",
            "--json")
    d = json.loads(r.output)
    assert d["phi"] is None and (d["phi_depth"], d["phi_width"], d["phi_resolution"]) == (1.0, 0.0, -1.0)
    assert d["resolution"] == 192 and d["width_multiplier"] == 1.0


def test_lite_preset_describes_efficientnet_lite_without_naming_the_family():
    d = json.loads(run("describe", "--preset", "lite0", "--json").output)
    assert d["family"] == "efficientnet-lite" and d["preset"] == "lite0" and d["params"] == 4_652_008
    assert f"{d['params'] / 1e6:.3g}" == "4.65"
    # an explicit family wins: a preset is a table of multipliers
    assert json.loads(run("describe", "--preset", "lite0", "--family", "efficientnet", "--json").output)[
        "family"] == "efficientnet"


def test_describe_human_table():
    r = run("describe", "--preset", "b3")
    assert r.exit_code == 0
    assert "params" in r.output and "MACs" in r.output and "stage7" in r.output


@pytest.mark.parametrize(
    "args, code, text",
    [
        (["--family", "vgg16"], 2,
         "'vgg16' is not one of 'efficientnet', 'efficientnet-lite', 'mobilenetv2', 'resnet18', 'resnet34', "
         "'resnet50'"),
        (["--preset", "b9"], 1, "Known: b0, b1"),
        (["--phi", "nan"], 1, "finite"),
        (["--phi", "13"], 1, "out of range"),
        (["--phi", "-12.5"], 1, "out of range"),
        (["--phi", "abc"], 2, "not a valid float"),
        (["--phi", "1", "--preset", "b1"], 1, "only one of"),
        (["--alpha", "-1", "--phi", "1"], 1, "alpha must be a positive"),
    ],
)
def test_describe_errors_are_one_line(args, code, text):
    r = run("describe", *args)
    assert r.exit_code == code
    assert text in r.output
    assert "Traceback" not in r.output
    if code == 1:
        assert r.output.strip().count("\n") == 0 and r.output.startswith("error: ")
