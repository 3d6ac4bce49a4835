"""Targets: the shipped TOML files, the loader's search order and its validation, and `deploy targets`."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import tomllib
from click.testing import CliRunner

from pipeline.cli import cli
from pipeline.core.errors import TargetInvalid, TargetNotFound, UsageError
from pipeline.core.paths import edgefit_home, project_root
from pipeline.predict.schemas import render_schemas
from pipeline.predict.targets import (
    Target,
    host_machine,
    host_machine_key,
    host_profile_path,
    known_target_names,
    list_targets,
    load_target,
)

REQUIRED = {"jetson-nano", "jetson-orin-nano", "jetson-agx-orin", "rtx-3060", "rtx-4090", "raspberry-pi-4",
            "raspberry-pi-5", "host"}
# The source names of the hardware figures in the shipped targets (each figure cites one of them).
SOURCES = (
    "NVIDIA spec as reproduced in ultralytics docs/en/guides/nvidia-jetson.md",
    "Seeed-Studio wiki reComputer_J4012; ultralytics nvidia-jetson guide",
    "ultralytics nvidia-jetson guide",
    "NVIDIA GeForce RTX 3060 specifications (vendor page)",
    "NVIDIA GeForce RTX 4090 specifications (vendor page)",
    "Raspberry Pi 4 product brief",
    "Raspberry Pi 5 product brief",
    # runtime_context_mb: TensorRT [MemUsageChange] logs and NVIDIA's comment on the CUDA context size
    "https://github.com/wang-xinyu/tensorrtx/issues/1145",
    "https://github.com/wang-xinyu/tensorrtx/issues/1320",
    "https://github.com/pytorch/pytorch/issues/107667",
)

MINIMAL = """\
name = "{name}"
description = "a test board"
kind = "cpu"
runtime = "onnxruntime"
precisions = ["fp32", "int8"]
memory_mb = {memory}
threads = 4
max_onnx_opset = 18
measurable = false

[hardware]
cpu = {{ value = "4x Cortex-A53", source = "the test's own datasheet" }}
"""


def write_target(folder: Path, name: str, memory: int = 512, text: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.toml"
    path.write_text(text if text is not None else MINIMAL.format(name=name, memory=memory))
    return path


# --- the shipped targets ----------------------------------------------------------------------------


def test_all_required_targets_load():
    targets = {t.name: t for t in list_targets()}
    assert REQUIRED <= set(targets)
    for name in REQUIRED:
        t = targets[name]
        assert isinstance(t, Target) and t == load_target(name)
        assert t.path == project_root() / "targets" / f"{name}.toml"
        assert t.memory_mb > 0 and t.precisions[0] == t.default_precision
        assert (t.kind, t.runtime) in {("gpu", "tensorrt"), ("cpu", "onnxruntime")}
        assert t.measurable is (name == "host")
        if t.kind == "cpu":
            assert t.threads and t.threads > 0
        else:
            assert t.trt_workspace_mb and t.trt_workspace_mb > 0


def test_onnx_opsets_match_the_runtimes():
    opset = {t.name: t.max_onnx_opset for t in list_targets()}
    assert opset["jetson-nano"] == 13  # TensorRT 8.2 (JetPack 4)
    assert all(opset[n] == 17 for n in ("jetson-orin-nano", "jetson-agx-orin", "rtx-3060", "rtx-4090"))
    assert all(opset[n] >= 18 for n in ("raspberry-pi-4", "raspberry-pi-5", "host"))


def test_every_hardware_figure_cites_a_published_source():
    for t in list_targets():
        if t.name == "host":
            assert t.hardware == {}  # everything about the host is detected, nothing is quoted
            continue
        assert t.hardware, t.name
        for key, figure in t.hardware.items():
            source = figure["source"]
            assert any(s in source for s in SOURCES), (t.name, key, source)
            numbers = {k: v for k, v in figure.items() if k != "source"}
            assert numbers, (t.name, key)


def test_derived_figures_say_so():
    nano = load_target("jetson-nano").hardware["peak_gflops"]
    assert nano["fp16"] == 472 and nano["fp32"] == 236 and "derived" in nano["source"]
    for name in ("rtx-3060", "rtx-4090"):  # the table gives FP32 only: no FP16 peak may appear
        assert set(load_target(name).hardware["peak_gflops"]) == {"fp32", "source"}


def test_host_is_detected_and_profiles_live_in_edgefit_home(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEFIT_HOME", str(tmp_path))
    host = load_target("host")
    assert set(host.detected) == {"memory_mb"}
    assert host.threads == 1 and host.memory_mb > 0  # 1 thread by default: reproducible timing
    info = host_machine()
    assert set(info) == {"cpu_model", "cores", "machine", "nchwc_block"} and info["cores"] == os.cpu_count()
    assert info["nchwc_block"] in (1, 8, 16)
    key = host_machine_key()
    assert re.fullmatch(r"[a-z0-9-]+-\d+c-[0-9a-f]{8}", key) and key == host_machine_key()
    path = host.profile_path("int8")
    assert path == tmp_path / "profiles" / "host" / key / f"onnxruntime-int8-t{host.threads}.json"
    assert path == host_profile_path("int8", host.threads)
    assert edgefit_home() == tmp_path and project_root() not in path.parents
    assert host.profile_status() == "none"


def test_profile_paths_follow_the_convention():
    root = project_root()
    assert load_target("rtx-3060").profile_path("int8") == root / "calibration/rtx-3060/tensorrt-int8.json"
    assert load_target("jetson-nano").profile_path() == root / "calibration/jetson-nano/tensorrt-fp16.json"
    assert load_target("raspberry-pi-4").profile_path() == root / "calibration/raspberry-pi-4/onnxruntime-fp32.json"
    with pytest.raises(UsageError, match="jetson-nano.*int8"):
        load_target("jetson-nano").profile_path("int8")


def test_profile_status_of_the_shipped_profiles():
    assert load_target("jetson-nano").profile_status("fp16") == "published"
    assert load_target("jetson-nano").profile_status("fp32") == "published"
    assert load_target("rtx-4090").profile_status("fp32") == "none"
    assert load_target("rtx-4090").profile_status("fp16") == "roofline"
    assert load_target("raspberry-pi-5").profile_status() == "published"


def test_every_calibration_folder_ships_in_a_wheel():
    data_files = tomllib.loads((project_root() / "pyproject.toml").read_text())["tool"]["setuptools"]["data-files"]
    for folder in sorted((project_root() / "calibration").iterdir()):
        if folder.is_dir() and any(folder.glob("*.json")):
            assert data_files.get(f"share/edgefit/calibration/{folder.name}") == [f"calibration/{folder.name}/*.json"]


# --- finding targets -----------------------------------------------------------------------------------


def test_unknown_target_lists_known_names_and_suggests_without_substituting():
    with pytest.raises(TargetNotFound) as info:
        load_target("jetson-nan")
    message = str(info.value)
    assert "'jetson-nan'" in message and "Did you mean 'jetson-nano'?" in message
    assert all(name in message for name in REQUIRED) and "\n" not in message
    assert info.value.name == "jetson-nan" and set(info.value.known) >= REQUIRED


def test_unknown_target_without_close_match_has_no_suggestion():
    with pytest.raises(TargetNotFound) as info:
        load_target("toaster")
    assert "Did you mean" not in str(info.value)


def test_user_targets_dir_is_listed_and_overrides_builtin(tmp_path):
    user = tmp_path / "mytargets"
    write_target(user, "my-board")
    write_target(user, "jetson-nano", text=(project_root() / "targets/jetson-nano.toml").read_text()
                 .replace("memory_mb = 4096", "memory_mb = 2048"))
    assert "my-board" in known_target_names(user) and REQUIRED <= set(known_target_names(user))
    assert load_target("my-board", user).memory_mb == 512
    assert load_target("jetson-nano", user).memory_mb == 2048
    assert load_target("jetson-nano", user).path == (user / "jetson-nano.toml").resolve()
    assert load_target("jetson-nano", user).profile_status() == "published"  # the copy keeps the shipped profile
    assert load_target("jetson-nano").memory_mb == 4096  # the built-in is untouched without --targets-dir
    with pytest.raises(TargetNotFound):
        load_target("my-board")


def test_targets_folder_in_working_directory_is_searched(tmp_path, monkeypatch):
    write_target(tmp_path / "targets", "cwd-board")
    monkeypatch.chdir(tmp_path)
    assert load_target("cwd-board").name == "cwd-board"
    arg = write_target(tmp_path / "arg", "cwd-board", memory=64).parent
    assert load_target("cwd-board", arg).memory_mb == 64  # --targets-dir beats ./targets


def test_user_target_profile_next_to_its_targets_folder(tmp_path):
    write_target(tmp_path / "targets", "my-board")
    target = load_target("my-board", tmp_path / "targets")
    assert target.profile_status() == "none"
    local = tmp_path / "calibration" / "my-board" / "onnxruntime-fp32.json"
    local.parent.mkdir(parents=True)
    shipped = json.loads((project_root() / "calibration/raspberry-pi-4/onnxruntime-fp32.json").read_text())
    local.write_text(json.dumps({**shipped, "target": "my-board"}))
    assert target.profile_path() == local and target.profile_status() == "published"
    local.write_text('{"schema_version": 1, "target": ')  # truncated
    assert target.profile_status() == "invalid"


# --- validation -----------------------------------------------------------------------------------------

BASE = MINIMAL.format(name="bad-board", memory=512)


@pytest.mark.parametrize("text, key", [
    ('colour = "red"\n' + BASE, "colour"),
    (BASE.replace('threads = 4\n', 'threads = 4\nflavour = 1\n'), "flavour"),
    (BASE.replace('kind = "cpu"\n', ""), "kind"),
    (BASE.replace('max_onnx_opset = 18\n', ""), "max_onnx_opset"),
    (BASE.replace('["fp32", "int8"]', '["fp32", "bf16"]'), "precisions[1]"),
    (BASE.replace('["fp32", "int8"]', '[]'), "precisions"),
    (BASE.replace('["fp32", "int8"]', '"fp32"'), "precisions"),
    (BASE.replace(', source = "the test\'s own datasheet"', ""), "hardware.cpu.source"),
    (BASE.replace('source = "the test\'s own datasheet"', 'source = ""'), "hardware.cpu.source"),
    (BASE.replace('[hardware]\n', '[hardware]\nbandwidth_gbs = 25.6\n'), "hardware.bandwidth_gbs"),
    (BASE.replace('kind = "cpu"', 'kind = "fpga"'), "kind"),
    (BASE.replace('runtime = "onnxruntime"', 'runtime = "tflite"'), "runtime"),
    (BASE.replace('memory_mb = 512', 'memory_mb = 0'), "memory_mb"),
    (BASE.replace('memory_mb = 512', 'memory_mb = -1'), "memory_mb"),
    (BASE.replace('memory_mb = 512', 'memory_mb = "auto"'), "memory_mb"),  # auto only on measurable targets
    (BASE.replace('memory_mb = 512', 'memory_mb = 5.5'), "memory_mb"),
    (BASE.replace('measurable = false', 'measurable = "no"'), "measurable"),
    (BASE.replace('threads = 4\n', ''), "threads"),
    (BASE.replace('name = "bad-board"', 'name = "other-board"'), "name"),
    (BASE.replace('runtime = "onnxruntime"', 'runtime = "tensorrt"'), "runtime"),
    (BASE + '[profile]\nfile = "x.json"\n', "profile.file"),
])
def test_bad_target_files_name_file_and_key(tmp_path, text, key):
    path = write_target(tmp_path, "bad-board", text=text)
    with pytest.raises(TargetInvalid) as info:
        load_target("bad-board", tmp_path)
    assert str(path) in str(info.value) and f"'{key}'" in str(info.value)


@pytest.mark.parametrize("text, message", [
    (BASE.replace('threads = 4', 'threads = "auto"'), "'threads' may be \"auto\" only on a measurable target"),
    (BASE.replace('threads = 4', 'threads = 2.5'), "'threads' must be a positive integer or \"auto\", got 2.5"),
    (BASE.replace('["fp32", "int8"]', '["fp32", "fp32"]'), "'precisions' must not repeat a precision"),
    (BASE.replace('max_onnx_opset = 18', 'max_onnx_opset = "18"'), "'max_onnx_opset' must be a valid integer"),
    (BASE.replace('description = "a test board"', 'description = "  "'), "'description' must be a non-empty string"),
    (BASE.replace('name = "bad-board"', 'name = "Bad_Board"'), "'name' must match ^[a-z0-9]+"),
    (BASE.replace('value = "4x Cortex-A53"', 'value = -2'), "'hardware.cpu.value' must be a positive number"),
    (BASE.replace('value = "4x Cortex-A53", ', ''), "'hardware.cpu' has a source but no value"),
    (BASE + '[profile]\npath = 3\n', "'profile.path' must be a valid string, got 3"),
    (BASE.replace('kind = "cpu"', 'kind = "fpga"').replace('memory_mb = 512', 'memory_mb = 0') + 'colour = 1\n',
     "'kind' must be one of 'gpu' or 'cpu', got 'fpga' (and 2 more)."),
])
def test_target_errors_name_the_dotted_key_path(tmp_path, text, message):
    path = write_target(tmp_path, "bad-board", text=text)
    with pytest.raises(TargetInvalid) as info:
        load_target("bad-board", tmp_path)
    assert str(info.value).startswith(f"{path}: ") and message in str(info.value) and "\n" not in str(info.value)


def test_auto_resolves_only_on_measurable_targets(tmp_path):
    text = BASE.replace('threads = 4', 'threads = "auto"').replace('memory_mb = 512', 'memory_mb = "auto"')
    write_target(tmp_path, "bad-board", text=text.replace("measurable = false", "measurable = true"))
    target = load_target("bad-board", tmp_path)
    assert target.threads == os.cpu_count() and target.memory_mb > 0 and target.detected == ("memory_mb", "threads")


def test_schema_file_matches_the_models():
    checked_in = json.loads((project_root() / "docs/schema/target.schema.json").read_text(encoding="utf-8"))
    assert checked_in == json.loads(render_schemas()["target.schema.json"]), "run: python -m pipeline.predict.schemas"


def test_shipped_targets_follow_the_checked_in_json_schema():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((project_root() / "docs/schema/target.schema.json").read_text(encoding="utf-8"))
    files = sorted((project_root() / "targets").glob("*.toml"))
    assert files
    for path in files:
        jsonschema.validate(tomllib.loads(path.read_text(encoding="utf-8")), schema)
    with pytest.raises(jsonschema.ValidationError, match="flavour"):
        jsonschema.validate({**tomllib.loads(files[0].read_text(encoding="utf-8")), "flavour": 1}, schema)


def test_gpu_target_needs_a_workspace(tmp_path):
    text = BASE.replace('kind = "cpu"', 'kind = "gpu"').replace('runtime = "onnxruntime"', 'runtime = "tensorrt"')
    write_target(tmp_path, "bad-board", text=text)
    with pytest.raises(TargetInvalid, match="'trt_workspace_mb'"):
        load_target("bad-board", tmp_path)


def test_broken_toml_is_target_invalid(tmp_path):
    path = write_target(tmp_path, "bad-board", text='name = "bad-board"\nkind = \n')
    with pytest.raises(TargetInvalid, match=re.escape(str(path))):
        load_target("bad-board", tmp_path)


# --- the CLI --------------------------------------------------------------------------------------------


def test_deploy_targets_json_lists_the_eight_targets():
    result = CliRunner().invoke(cli, ["targets", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert {r["name"] for r in rows} == REQUIRED
    keys = {"name", "description", "kind", "runtime", "precisions", "memory_mb", "threads", "max_onnx_opset",
            "measurable", "profiles", "source_file"}
    for row in rows:
        assert keys <= set(row)
        assert set(row["profiles"]) == set(row["precisions"])
        assert all(set(p) == {"status", "path"} for p in row["profiles"].values())
    by_name = {r["name"]: r for r in rows}
    assert by_name["jetson-nano"]["profiles"]["fp16"]["status"] == "published"
    assert by_name["rtx-4090"]["profiles"]["fp16"]["status"] == "roofline"
    assert by_name["host"]["profiles"]["fp32"]["status"] == "none"


def test_deploy_targets_table_and_targets_dir(tmp_path):
    write_target(tmp_path, "my-board")
    result = CliRunner().invoke(cli, ["targets", "--targets-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    header = result.output.splitlines()[0].split()
    assert header == ["name", "kind", "runtime", "precisions", "memory", "threads", "profile"]
    assert "my-board" in result.output and "fp16: published" in result.output


def test_deploy_targets_bad_file_exits_1_with_one_line(tmp_path):
    write_target(tmp_path, "bad-board", text=BASE.replace('["fp32", "int8"]', '["fp64"]'))
    result = CliRunner().invoke(cli, ["targets", "--targets-dir", str(tmp_path)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "'precisions[0]'" in lines[0]
