"""The measurement agent (``edgefit_device.py serve``) as a real server process on 127.0.0.1.

Every server is started on port 0 (its first stdout line names the port), talked to with http.client, and
terminated in a finally. The temp directory of each server is a private TMPDIR, so a test can see every file
the agent creates.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from io import BytesIO
from pathlib import Path

import pytest
from tinymodels import tiny_onnx

from pipeline.measure import edgefit_device as dev

RUNNER = Path(dev.__file__)
TOKEN = "s3cret-token-for-tests"
QUICK = "warmup=1&min_repeats=3&min_time_s=0"


class Agent:
    def __init__(self, proc: subprocess.Popen, port: int, tmpdir: Path):
        self.proc, self.port, self.tmpdir = proc, port, tmpdir
        self.stderr = b""

    def request(self, method: str, path: str, body: bytes | None = None, token: str | None = TOKEN,
                headers: dict | None = None, timeout: float = 60) -> tuple[int, dict, dict]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            hdrs = dict(headers or {})
            if token is not None:
                hdrs["Authorization"] = "Bearer " + token
            if body is not None:
                hdrs.setdefault("Content-Type", "application/octet-stream")
            conn.request(method, path, body=body, headers=hdrs)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, json.loads(data) if data else {}, dict(resp.getheaders())
        finally:
            conn.close()


@contextmanager
def agent(tmp_path: Path, *args: str, env: dict | None = None, token: bool = True) -> Iterator[Agent]:
    tmpdir = tmp_path / "agent-tmp"
    tmpdir.mkdir(exist_ok=True)
    cmd = [sys.executable, str(RUNNER), "serve", "--port", "0", *args]
    if token:
        token_file = tmp_path / "token"
        token_file.write_text(TOKEN + "\n")
        cmd += ["--token-file", str(token_file)]
    full_env = {k: v for k, v in os.environ.items() if k != "EDGEFIT_AGENT_TOKEN"}
    full_env.update({"TMPDIR": str(tmpdir)}, **(env or {}))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env)
    try:
        line: list[bytes] = []
        reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(30)
        match = re.match(rb"edgefit agent listening on http://127\.0\.0\.1:(\d+)$", (line or [b""])[0].strip())
        assert match, (line, proc.poll())
        yield Agent(proc, int(match.group(1)), tmpdir)
    finally:
        proc.kill()
        proc.wait(10)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> list[bytes]:
    root = tmp_path_factory.mktemp("agent-models")
    return [tiny_onnx(root / "a.onnx").read_bytes(), tiny_onnx(root / "b.onnx", res=40).read_bytes(),
            tiny_onnx(root / "c.onnx", family="mobilenetv2").read_bytes()]


def test_tokens_paths_and_methods(tmp_path: Path) -> None:
    with agent(tmp_path) as a:
        assert a.request("GET", "/v1/info", token=None)[0] == 401
        status, body, _ = a.request("GET", "/v1/info", token="wrong")
        assert status == 401 and "token" in body["error"]
        status, body, _ = a.request("GET", "/v1/info")
        assert status == 200 and body["facts"]["runner_version"] == "1" and "onnxruntime" in body["runtimes"]
        assert body["max_body_bytes"] == 512 << 20  # the cap, so a client refuses an oversized model before sending
        assert a.request("GET", "/nope")[0] == 404
        status, body, headers = a.request("GET", "/v1/measure")
        assert status == 405 and headers["Allow"] == "POST" and body["error"]


def test_length_required_and_body_cap_before_reading(tmp_path: Path) -> None:
    with agent(tmp_path, "--max-body-mb", "1") as a:
        conn = http.client.HTTPConnection("127.0.0.1", a.port, timeout=10)
        try:  # headers only: the agent must answer without waiting for 1 GB that never comes
            conn.putrequest("POST", "/v1/measure")
            conn.putheader("Authorization", "Bearer " + TOKEN)
            conn.putheader("Content-Length", str(10**9))
            conn.endheaders()
            resp = conn.getresponse()
            assert resp.status == 413 and "cap" in json.loads(resp.read())["error"]
        finally:
            conn.close()
        conn = http.client.HTTPConnection("127.0.0.1", a.port, timeout=10)
        try:
            conn.putrequest("POST", "/v1/measure")
            conn.putheader("Authorization", "Bearer " + TOKEN)
            conn.endheaders()
            resp = conn.getresponse()
            assert resp.status == 411 and json.loads(resp.read())["error"]
        finally:
            conn.close()


def _malformed(models: list[bytes]) -> list[bytes]:
    zipped = BytesIO()
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("model.onnx", models[0])
    model = models[0]
    cases = [b"", b"hello, I am not a model", b"{\"ir_version\": 7}", zipped.getvalue(), b"\x00" * 64,
             b"\xff" * 10]
    cases += [model[: len(model) * k // 45] for k in range(1, 45)]  # truncated ONNX, 44 ways
    return cases[:50]


def test_malformed_uploads_are_400_and_the_agent_keeps_serving(tmp_path: Path, models: list[bytes]) -> None:
    cases = _malformed(models)
    assert len(cases) == 50
    with agent(tmp_path) as a:
        for body in cases:
            status, reply, _ = a.request("POST", "/v1/measure?" + QUICK, body=body)
            assert status == 400, (status, reply, body[:20])
            assert reply["error"]
        assert a.request("GET", "/v1/info")[0] == 200
        assert a.request("POST", "/v1/measure?runtime=nope", body=models[0])[0] == 400
        assert a.request("POST", "/v1/measure?threads=x", body=models[0])[0] == 400
        assert a.request("POST", "/v1/measure?" + QUICK + "&" + QUICK, body=models[0])[0] == 400


def test_concurrent_requests_get_their_own_results_or_429(tmp_path: Path, models: list[bytes]) -> None:
    answers: list[tuple[int, dict, dict, bytes]] = []
    lock = threading.Lock()
    with agent(tmp_path, "--queue", "2") as a:
        def send(i: int) -> None:
            body = models[i % len(models)]
            try:
                status, reply, headers = a.request("POST", "/v1/measure?" + QUICK, body=body)
            except OSError as exc:  # recorded, so the assertion below names it
                status, reply, headers = -1, {"error": repr(exc)}, {}
            with lock:
                answers.append((status, reply, headers, body))

        threads = [threading.Thread(target=send, args=(i,)) for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert len(answers) == 20
        ok = [x for x in answers if x[0] == 200]
        busy = [x for x in answers if x[0] == 429]
        assert len(ok) + len(busy) == 20, [x[:2] for x in answers if x[0] not in (200, 429)]
        assert ok, "at least the first job ran"
        for _, reply, _, body in ok:
            assert reply["ok"] is True and reply["sha256"] == hashlib.sha256(body).hexdigest()
        for _, reply, headers, _ in busy:
            assert int(headers["Retry-After"]) > 0 and reply["error"]
        assert busy, "20 requests against one running + 2 queued jobs: some are turned away"
        assert not any(a.tmpdir.rglob("*.onnx")), "every job file was removed"


def test_client_names_never_reach_the_filesystem(tmp_path: Path, models: list[bytes]) -> None:
    with agent(tmp_path) as a:
        status, reply, _ = a.request("POST", "/v1/measure?name=../../evil.onnx&" + QUICK, body=models[0])
        assert status == 400 and "unknown parameter" in reply["error"]
        status, reply, _ = a.request("POST", "/v1/measure?" + QUICK, body=models[0], headers={
            "X-Filename": "../../evil.onnx", "Content-Disposition": 'attachment; filename="../../evil.onnx"'})
        assert status == 200 and reply["ok"] is True
        assert reply["model"] != "evil.onnx" and re.fullmatch(r"[0-9a-f]{32}\.onnx", reply["model"])
        a.proc.kill()
        _, err = a.proc.communicate(10)
    jobs = re.findall(rb"agent: job (\S+)", err)
    assert jobs and all(re.fullmatch(rb"[0-9a-f]{32}\.onnx", j) for j in jobs)
    assert not [p for p in tmp_path.rglob("*evil*")]
    # the agent creates one private directory in TMPDIR (killed here, so it stays for inspection); dotfiles that
    # the host's Python start-up may drop in TMPDIR are not the agent's
    created = [p for p in (tmp_path / "agent-tmp").iterdir() if not p.name.startswith(".")]
    assert len(created) == 1 and created[0].name.startswith("edgefit-agent-"), created
    assert created[0].stat().st_mode & 0o777 == 0o700 and not list(created[0].iterdir())
    outside = [p for p in tmp_path.rglob("*") if p.is_file() and "agent-tmp" not in p.parts and p.name != "token"]
    assert not outside, outside


def test_a_hanging_model_is_killed_504_and_the_agent_keeps_serving(tmp_path: Path, models: list[bytes]) -> None:
    env = {"EDGEFIT_DEVICE_TESTING": "1", "EDGEFIT_DEVICE_TEST_HANG": "1"}
    with agent(tmp_path, "--job-timeout-s", "2", env=env) as a:
        status, reply, _ = a.request("POST", "/v1/measure?" + QUICK, body=models[0])
        assert status == 504 and "timeout" in reply["error"]
        assert a.request("GET", "/v1/info")[0] == 200
        status, reply, _ = a.request("POST", "/v1/measure?" + QUICK, body=models[1])
        assert status == 504, "the next job runs (and hangs too): the queue was not left stuck"
        assert not any(a.tmpdir.rglob("*.onnx"))
        children = subprocess.run(["pgrep", "-P", str(a.proc.pid)], capture_output=True, text=True).stdout.split()
        assert not children, "the hanging child was killed"


def test_max_requests_exits(tmp_path: Path) -> None:
    with agent(tmp_path, "--max-requests", "2") as a:
        assert a.request("GET", "/v1/info")[0] == 200
        assert a.request("GET", "/nope")[0] == 404
        assert a.proc.wait(10) == 0


def test_no_token_on_a_public_address_refuses_to_start(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "EDGEFIT_AGENT_TOKEN"}
    proc = subprocess.run([sys.executable, str(RUNNER), "serve", "--host", "0.0.0.0", "--port", "0"],
                          capture_output=True, text=True, timeout=30, env=env)
    assert proc.returncode == 2
    assert proc.stdout == "" and len(proc.stderr.strip().splitlines()) == 1 and "token" in proc.stderr
