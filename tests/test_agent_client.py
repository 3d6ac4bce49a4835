"""AgentDevice against a fake agent that follows the protocol, and check_device on synthetic facts.

The fake agent below is a TEST STAND-IN for ``edgefit_device.py serve`` (the real runner): it
speaks the same HTTP protocol (token, /v1/info, /v1/measure with the timing query, 401/413/422/429)
and really times the uploaded model with ONNX Runtime in-process.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from pipeline.core.errors import AgentUnreachable, BackendUnavailable, DeployError
from pipeline.measure.agent import AgentDevice, check_device, read_token
from pipeline.measure.settings import TimingSettings
from pipeline.predict.targets import load_target
from tests.tinymodels import tiny_onnx

TOKEN = "s3cret-token"
SETTINGS = TimingSettings(warmup=1, min_repeats=5, min_time_s=0.05, rounds=2)
X86_FACTS = {"runner_version": "1", "hostname": "box", "system": "Linux", "machine": "x86_64",
             "model": "Fake CPU @ 3GHz", "cpu_model": "Fake CPU @ 3GHz", "cpu_count": 2, "memory_mb": 4096,
             "cpu_governor": None, "nvpmodel": None, "python": "3.11.0",
             "runtimes": {"onnxruntime": "1.0", "tensorrt": None, "cuda": None}, "jetson": False}


def _time_model(path: Path, q: dict) -> dict:
    """What the runner's ONNX Runtime child does, in-process: warm-up, rounds of timed calls, statistics."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(q.get("threads", 1))
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in inp.shape]
    x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    for _ in range(int(q["warmup"])):
        sess.run(None, {inp.name: x})
    times, rounds = [], []
    for _ in range(int(q["rounds"])):
        this, start = [], time.perf_counter()
        while len(this) < int(q["min_repeats"]) or time.perf_counter() - start < float(q["min_time_s"]):
            t0 = time.perf_counter()
            sess.run(None, {inp.name: x})
            this.append((time.perf_counter() - t0) * 1e3)
        rounds.append(float(np.percentile(this, 50)))
        times += this
    ms = np.asarray(times)
    return {"p50": float(np.percentile(ms, 50)), "p90": float(np.percentile(ms, 90)),
            "p99": float(np.percentile(ms, 99)), "mean": float(ms.mean()), "std": float(ms.std(ddof=1)),
            "min": float(ms.min()), "max": float(ms.max()), "n": int(ms.size), "total_s": float(ms.sum() / 1e3),
            "warmup": int(q["warmup"]), "round_p50": rounds if len(rounds) > 1 else None}


class FakeAgent(BaseHTTPRequestHandler):
    script: list[str] = []  # per-request behaviour overrides, consumed in order: "busy", "fail", "corrupt"
    seen: list[dict] = []
    max_body = 512 << 20

    def log_message(self, *args):  # keep pytest output clean
        pass

    def _send(self, code: int, body: dict, headers: dict | None = None) -> None:
        raw = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(raw)

    def _authorized(self) -> bool:
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self._send(401, {"error": "missing or wrong token"})
            return False
        return True

    def do_GET(self):  # noqa: N802
        if not self._authorized():
            return
        if self.path != "/v1/info":
            return self._send(404, {"error": "no such path"})
        self._send(200, {"facts": X86_FACTS, "runtimes": ["onnxruntime"]})

    def do_POST(self):  # noqa: N802
        if not self._authorized():
            return
        url = urllib.parse.urlparse(self.path)
        q = {k: v[0] for k, v in urllib.parse.parse_qs(url.query).items()}
        size = int(self.headers.get("Content-Length", "-1"))
        if size > self.max_body:
            return self._send(413, {"error": f"body of {size} bytes over the 1 MiB cap"})
        body = self.rfile.read(size)
        FakeAgent.seen.append(q)
        action = FakeAgent.script.pop(0) if FakeAgent.script else "ok"
        if action == "busy":
            return self._send(429, {"error": "queue full"}, {"Retry-After": "0"})
        sha = hashlib.sha256(body).hexdigest()
        if action == "fail":
            return self._send(422, {"model": "x.onnx", "sha256": sha, "ok": False, "error": "invalid graph"})
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "m.onnx"
            path.write_bytes(body)
            latency = _time_model(path, q)
        if action == "corrupt":
            sha = "0" * 64
        self._send(200, {"model": "m.onnx", "sha256": sha, "ok": True,
                         "runtime": {"name": "onnxruntime", "version": "1.0", "provider": "CPUExecutionProvider",
                                     "flags": None},
                         "precision": q["precision"], "threads": int(q.get("threads", 1)), "settings": {},
                         "latency_ms": latency, "peak_memory_mb": 12.5, "memory_method": "fake: constant",
                         "when": "2026-01-01T00:00:00+00:00", "seconds": 0.1})


@contextlib.contextmanager
def fake_agent(script: list[str] | None = None, max_body: int = 512 << 20):
    FakeAgent.script, FakeAgent.seen, FakeAgent.max_body = list(script or []), [], max_body
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeAgent)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def model(tmp_path):
    return tiny_onnx(tmp_path / "model.onnx")


def test_measure_through_the_agent(model):
    target = load_target("raspberry-pi-4")
    with fake_agent() as url:
        device = AgentDevice(url, target, token=TOKEN, threads=2)
        m = device.measure(model, SETTINGS)
        assert device.facts()["machine"] == "x86_64"
    q = FakeAgent.seen[0]
    assert q == {"runtime": "onnxruntime", "precision": "fp32", "threads": "2", "warmup": "1", "min_repeats": "5",
                 "min_time_s": "0.05", "rounds": "2"}
    assert m.model_sha256 == hashlib.sha256(model.read_bytes()).hexdigest()
    assert m.device == f"raspberry-pi-4: Fake CPU @ 3GHz (agent {url})"
    assert m.latency.n >= 10 and 0 < m.latency.min_ms <= m.latency.p50_ms <= m.latency.p99_ms
    assert len(m.latency.round_p50_ms) == 2 and m.latency.threads == 2
    assert m.memory_mb == 12.5 and m.runtime["name"] == "onnxruntime" and m.facts["model"] == "Fake CPU @ 3GHz"
    assert m.settings == SETTINGS


def test_busy_agent_is_waited_out(model):
    with fake_agent(["busy", "busy"]) as url:
        m = AgentDevice(url, load_target("host"), token=TOKEN).measure(model, SETTINGS)
    assert len(FakeAgent.seen) == 3 and m.latency.n >= 5


@pytest.mark.parametrize(("token", "words"), [(None, "missing"), ("nope", "wrong")])
def test_token_refused(model, token, words):
    with fake_agent() as url, pytest.raises(DeployError, match=f"refused the token \\({words}\\).*--agent-token-file"):
        AgentDevice(url, load_target("host"), token=token).facts()


def test_failures_are_deploy_errors(model):
    with fake_agent(["fail", "corrupt"]) as url:
        device = AgentDevice(url, load_target("host"), token=TOKEN)
        with pytest.raises(DeployError, match="could not measure model.onnx: invalid graph"):
            device.measure(model, SETTINGS)
        with pytest.raises(DeployError, match="measured other bytes"):
            device.measure(model, SETTINGS)
    with fake_agent(max_body=100) as url, pytest.raises(DeployError, match="too large"):
        AgentDevice(url, load_target("host"), token=TOKEN).measure(model, SETTINGS)


def test_connection_refused_names_the_url():
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(BackendUnavailable, match=f"http://127.0.0.1:{port}"):
        AgentDevice(f"http://127.0.0.1:{port}", load_target("host")).facts()


@contextlib.contextmanager
def dropping_agent(info: dict, alive_after: bool):
    """An agent that answers GET /v1/info, resets the first upload mid-way, and then is gone (or not).

    The reset is what a client sees both when a body is over an agent's cap and when the agent
    stops while the model is uploading (a farm's agent restarting, the network going away). Serves
    a bounded number of connections and stops by itself.
    """
    import socket
    import struct

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    srv.settimeout(20)
    body = json.dumps(info).encode()

    def serve():
        try:
            for _ in range(4):
                conn, _ = srv.accept()
                with conn:
                    if conn.recv(65536).startswith(b"GET"):
                        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n"
                                     b"Content-Length: %d\r\n\r\n" % len(body) + body)
                        continue
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST
                    if not alive_after:
                        srv.close()  # nobody listens any more
                        return
        except OSError:
            return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.getsockname()[1]}"
    finally:
        srv.close()
        thread.join(timeout=5)


@pytest.fixture
def big_model(tmp_path):
    """32 MiB of bytes: more than loopback buffers hold, so the reset lands while it is uploading."""
    path = tmp_path / "big.onnx"
    path.write_bytes(np.random.default_rng(0).bytes(32 << 20))
    return path


@pytest.mark.parametrize("cap", [512 << 20, None])
def test_an_agent_gone_mid_upload_is_unreachable_not_too_large(big_model, cap):
    info = {"facts": X86_FACTS, "runtimes": ["onnxruntime"], **({"max_body_bytes": cap} if cap else {})}
    with dropping_agent(info, alive_after=False) as url, pytest.raises(AgentUnreachable) as exc:
        AgentDevice(url, load_target("host"), token=TOKEN).measure(big_model, SETTINGS)
    assert "too large" not in str(exc.value)


def test_a_live_agent_that_resets_an_upload_without_a_stated_cap_is_too_large(big_model):
    with dropping_agent({"facts": X86_FACTS, "runtimes": ["onnxruntime"]}, alive_after=True) as url:
        with pytest.raises(DeployError, match="too large") as exc:
            AgentDevice(url, load_target("host"), token=TOKEN).measure(big_model, SETTINGS)
    assert not isinstance(exc.value, AgentUnreachable)


def test_a_model_over_the_stated_cap_is_refused_before_uploading(big_model):
    info = {"facts": X86_FACTS, "runtimes": ["onnxruntime"], "max_body_bytes": 1 << 20}
    with dropping_agent(info, alive_after=True) as url:
        with pytest.raises(DeployError, match="32.0 MiB is over its 1 MiB cap"):
            AgentDevice(url, load_target("host"), token=TOKEN).measure(big_model, SETTINGS)


def test_bad_url_and_token_file(tmp_path, monkeypatch):
    with pytest.raises(DeployError, match="http\\(s\\) URL"):
        AgentDevice("192.168.1.2:8765", load_target("host"))
    (tmp_path / "t").write_text(" abc \n")
    assert read_token(tmp_path / "t") == "abc"
    (tmp_path / "empty").write_text("")
    with pytest.raises(DeployError, match="empty"):
        read_token(tmp_path / "empty")
    monkeypatch.setenv("EDGEFIT_AGENT_TOKEN", "from-env")
    assert read_token() == "from-env"


def facts(**kw) -> dict:
    return {**X86_FACTS, **kw}


def test_check_device_refuses_contradictions():
    with pytest.raises(DeployError, match="no TensorRT.*--accept-device"):
        check_device(facts(), load_target("rtx-4090"))
    with pytest.raises(DeployError, match="is a Jetson but the device is Fake CPU @ 3GHz \\(x86_64\\)"):
        check_device(facts(runtimes={"tensorrt": "8.6"}), load_target("jetson-orin-nano"))
    with pytest.raises(DeployError, match="is a Raspberry Pi"):
        check_device(facts(), load_target("raspberry-pi-4"))
    warnings = check_device(facts(), load_target("raspberry-pi-4"), accept=True)
    assert any("accepted with --accept-device" in w for w in warnings)


def test_check_device_accepts_the_right_device():
    jetson = facts(machine="aarch64", jetson=True, model="NVIDIA Jetson Orin Nano",
                   runtimes={"onnxruntime": None, "tensorrt": "8.6.2", "cuda": "12.2"})
    assert check_device(jetson, load_target("jetson-orin-nano")) == []
    pi = facts(machine="aarch64", model="Raspberry Pi 4 Model B Rev 1.4", cpu_governor="ondemand")
    assert check_device(pi, load_target("raspberry-pi-4")) == [
        "the device's CPU governor is 'ondemand', not 'performance': timings may drift"]
    assert check_device(facts(), load_target("host")) == []


def test_fit_measures_through_the_agent(tmp_path):
    """The closed loop runs on a non-host target through the agent; fit.json names the agent's device."""
    from click.testing import CliRunner

    from pipeline.cli import cli

    token = tmp_path / "token"
    token.write_text(TOKEN)
    args = ["fit", "--target", "raspberry-pi-4", "--latency", "100ms", "--family", "resnet18", "--phi-min", "-4",
            "--phi-max", "-3.5", "--agent-token-file", str(token), "--out", str(tmp_path / "run"), "--json"]
    with fake_agent() as url:
        refused = CliRunner().invoke(cli, [*args, "--agent", url])
        assert refused.exit_code == 1 and "--accept-device" in refused.output and "is a Raspberry Pi" in refused.output
        result = CliRunner().invoke(cli, [*args, "--agent", url, "--accept-device"])
        assert result.exit_code == 0, result.output
        record = json.loads((tmp_path / "run" / "fit.json").read_text())
        assert record["measured"]["device"] == f"raspberry-pi-4: Fake CPU @ 3GHz (agent {url})"
        assert record["measured"]["agent"] == url and record["measured"]["facts"]["machine"] == "x86_64"
        assert record["verified"]["latency"] is True and FakeAgent.seen[0]["rounds"] == "3"
        _verify_through_the_agent(tmp_path / "run", url, token)


def _verify_through_the_agent(run, url, token):
    """verify --agent: re-measured, recorded, JUnit written; a missed budget is exit 4 with a <failure>."""
    import xml.etree.ElementTree as ET

    from click.testing import CliRunner

    from pipeline.cli import cli
    from pipeline.record.rundir import read_record, write_record

    args = ["verify", str(run), "--agent", url, "--agent-token-file", str(token), "--accept-device",
            "--junit", str(run.parent / "junit.xml")]
    FakeAgent.seen.clear()
    ok = CliRunner().invoke(cli, args)
    assert ok.exit_code == 0, ok.output
    assert FakeAgent.seen[0]["rounds"] == "3"  # the fit row
    suite = ET.parse(run.parent / "junit.xml").getroot()
    assert suite.get("tests") == "3" and suite.get("failures") == "0"  # latency, memory (skipped), parity
    assert {c.get("name") for c in suite.iter("testcase")} == {"latency p50", "memory", "parity"}
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["device"].endswith(f"(agent {url})") and float(props["latency_ms_p50"]) > 0
    record = read_record(run)
    record.budget = record.budget.model_copy(update={"latency_ms": 1e-4})
    write_record(run, record)
    missed = CliRunner().invoke(cli, args)
    assert missed.exit_code == 4 and "over the budget" in missed.output
    failure = ET.parse(run.parent / "junit.xml").getroot().find("testcase[@name='latency p50']/failure")
    assert failure is not None and "over the budget of 0.0001 ms" in failure.get("message")
    assert read_record(run).verified.latency is False


def test_calibrate_through_the_agent_is_preferred_by_predictions():
    """calibrate --agent: a measured profile under $EDGEFIT_HOME that the target's predictions then use."""
    from pipeline.fit.calibrate import calibrate
    from pipeline.predict.predictor import load_predictor
    from pipeline.predict.targets import device_profile_path
    from tests.conftest import tiny_suite, tiny_timing

    target = load_target("raspberry-pi-4")
    shipped = target.profile_path("fp32")
    with fake_agent() as url:
        profile = calibrate(target, "fp32", suite=tiny_suite()[:9], settings=tiny_timing(),
                            device=AgentDevice(url, target, token=TOKEN))
    assert profile.path == device_profile_path("raspberry-pi-4", "onnxruntime", "fp32") != shipped
    assert profile.provenance == "measured" and profile.device["model"] == "Fake CPU @ 3GHz"
    assert profile.device["threads"] == 4 and FakeAgent.seen[0]["threads"] == "4"
    assert len(profile.records) == 9 and profile.runtime["name"] == "onnxruntime"
    assert load_target("raspberry-pi-4").profile_path("fp32") == profile.path
    assert load_predictor(load_target("raspberry-pi-4"), "fp32").provenance == "measured"
