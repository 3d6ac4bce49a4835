"""Custom and named scalings: --alpha/--beta/--gamma and --scaling on describe/train/fit, the user config, runs."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from pipeline.cli import cli
from pipeline.core.errors import DeployError, UnknownName, UsageError
from pipeline.core.scaling import flops_factor, reference_constants
from pipeline.core.scalings import config_path, list_scalings, lookup, resolve, save_scaling


def run(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_reference_constants_keep_flops_per_phi():
    assert reference_constants("efficientnet") == (1.2, 1.1, 1.15)
    a, b, g = reference_constants("dollar-fast")  # d = s^0.1, w = s^0.4, r = s^0.05 with s = 2 per unit of φ
    assert (a, b, g) == pytest.approx((2**0.1, 2**0.4, 2**0.05), abs=1e-6)
    assert flops_factor(a, b, g) == pytest.approx(2.0, rel=1e-5)
    assert flops_factor(*reference_constants("dollar-fast", 4.0)) == pytest.approx(4.0, rel=1e-5)


def test_save_list_and_look_up(tmp_path):
    save_scaling("shapes-host", 1.1, 1.2, 1.1, "grid g/")
    assert json.loads(config_path().read_text())["scalings"]["shapes-host"]["alpha"] == 1.1
    got = lookup("shapes-host")
    assert (got.alpha, got.beta, got.gamma, got.kind) == (1.1, 1.2, 1.1, "user")
    assert [s.name for s in list_scalings()] == ["efficientnet", "dollar-fast", "shapes-host"]
    save_scaling("shapes-host", 1.1, 1.2, 1.1, "again")  # the same constants: fine
    with pytest.raises(DeployError, match="already exists"):
        save_scaling("shapes-host", 1.3, 1.0, 1.0, "other")
    save_scaling("shapes-host", 1.3, 1.0, 1.0, "other", force=True)
    assert lookup("shapes-host").alpha == 1.3
    with pytest.raises(UsageError, match="reference scaling"):
        save_scaling("efficientnet", 1, 1, 1, "x")
    with pytest.raises(UsageError, match="lowercase"):
        save_scaling("Bad Name", 1, 1, 1, "x")
    with pytest.raises(UnknownName, match="dollar-fast"):
        lookup("nope")
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "grid.json").write_text(json.dumps({"scaling": {"name": "winner", "alpha": 1.4, "beta": 1.1,
                                                                      "gamma": 1.0}}))
    assert lookup(str(tmp_path / "g")).alpha == 1.4 and lookup(str(tmp_path / "g")).kind == "run"
    with pytest.raises(DeployError, match="neither grid.json nor fit.json"):
        lookup(str(tmp_path))
    with pytest.raises(UsageError, match="not both"):
        resolve(alpha=1.2, name="efficientnet")
    assert resolve(beta=1.3).to_dict() | {} == {"name": None, "alpha": 1.2, "beta": 1.3, "gamma": 1.15,
                                               "kind": "flags", "source": "--alpha/--beta/--gamma"}


def test_describe_uses_the_given_constants():
    d = json.loads(run("describe", "--phi", "-2", "--alpha", "1.3", "--beta", "1.0", "--gamma", "1.0", "--json").output)
    assert d["depth_multiplier"] == pytest.approx(1.3**-2) and d["width_multiplier"] == 1.0 and d["resolution"] == 224
    assert d["scaling"]["alpha"] == 1.3 and d["scaling"]["kind"] == "flags"
    d = json.loads(run("describe", "--phi", "-2", "--scaling", "dollar-fast", "--json").output)
    assert d["width_multiplier"] == pytest.approx(2**-0.8, abs=1e-5) and d["scaling"]["name"] == "dollar-fast"
    r = run("describe", "--phi", "1", "--scaling", "efficientnet", "--alpha", "1.3")
    assert r.exit_code == 2 and "not both" in r.output
    r = run("describe", "--phi", "1", "--scaling", "nope")
    assert r.exit_code == 1 and "unknown scaling 'nope'" in r.output


def test_scaling_command_saves_from_a_run_and_lists(tmp_path):
    fit_json = tmp_path / "fit.json"
    fit_json.write_text(json.dumps({"scaling": {"name": None, "alpha": 1.25, "beta": 1.05, "gamma": 1.2}}))
    r = run("scaling", "save", "mine", "--from", str(fit_json), "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["alpha"] == 1.25
    r = run("scaling", "list", "--json")
    names = {d["name"]: d for d in json.loads(r.output)}
    assert names["mine"]["kind"] == "user" and names["mine"]["source"] == str(fit_json)
    assert "dollar-fast" in run("scaling", "list").output
    assert run("scaling", "save", "x", "--alpha", "1.2").exit_code == 2  # all three or --from


def test_predicted_fit_records_the_constants_and_fills_per_dimension(tmp_path):
    """jetson-nano is predicted only: the per-dimension ladders are searched on predictions with the same margin."""
    out = tmp_path / "run"
    r = run("fit", "--target", "jetson-nano", "--latency", "14ms", "--phi-min", "-4", "--phi-max", "-3.5",
            "--alpha", "1.25", "--beta", "1.08", "--gamma", "1.12", "--search", "per-dimension", "--out", str(out),
            "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["scaling"] == {"name": None, "alpha": 1.25, "beta": 1.08, "gamma": 1.12, "kind": "flags",
                            "source": "--alpha/--beta/--gamma", "base_resolution": 224}
    assert d["search"]["mode"] == "per-dimension"
    pd = d["search"]["per_dimension"]
    assert pd["basis"] == "predicted" and pd["order"] == ["resolution", "width"]
    c, f = pd["compound"], pd["chosen"]
    assert c["phi_depth"] == c["phi_width"] == c["phi_resolution"] == d["phi"]
    assert f["utilisation"] >= c["utilisation"] and f["utilisation"] <= 1.0
    assert f["phi_resolution"] >= c["phi_resolution"] and f["phi_width"] >= c["phi_width"]
    assert d["resolution"] == f["resolution"] and d["scale"]["phi_width"] == f["phi_width"]
    chosen_steps = [s for s in pd["steps"] if s["chosen"]]
    assert [s["dimension"] for s in chosen_steps] == ["resolution", "width"]
    report = (out / "report.md").read_text()
    assert "## Per-dimension fill" in report and "α=1.25, β=1.08, γ=1.12" in report
    # the run's constants are a named scaling too
    assert lookup(str(out)).alpha == 1.25
