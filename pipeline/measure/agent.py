"""A remote device behind a measurement agent (``edgefit_device.py serve``), as a :class:`Device`.

The agent's protocol is docs in ``pipeline/measure/edgefit_device.py`` (the runner): ``GET /v1/info``
returns the device's facts, ``POST /v1/measure`` times the ONNX bytes of the body with the timing
settings of the query string and returns one result JSON. This client sends the file, checks that
the agent measured exactly those bytes (sha256), and turns the result into the same
:class:`~pipeline.measure.device.DeviceMeasurement` a :class:`LocalDevice` returns, so ``deploy fit``,
``calibrate`` and ``verify`` need not know where a model was timed.

:func:`check_device` refuses an agent whose facts contradict the target (a TensorRT target on a
machine without TensorRT, a Jetson target on an x86 box, ...): a latency measured on the wrong
device would silently mislabel every decision made from it.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from pipeline.core.errors import AgentUnreachable, DeployError
from pipeline.core.io import sha256_bytes
from pipeline.measure.device import Device, DeviceMeasurement
from pipeline.measure.settings import TimingSettings
from pipeline.measure.timing import Timing

TOKEN_ENV = "EDGEFIT_AGENT_TOKEN"
MAX_BUSY_RETRIES = 30  # 429 answers waited out before giving up
MAX_RETRY_AFTER_S = 30.0
ARM_MACHINES = ("aarch64", "arm64", "armv7l")
TOKEN_HINT = f"pass it with --agent-token-file FILE or the {TOKEN_ENV} environment variable"


def read_token(token_file: str | Path | None = None) -> str | None:
    """The agent token: the first line of ``token_file``, else ``$EDGEFIT_AGENT_TOKEN``, else None."""
    if token_file is not None:
        try:
            token = Path(token_file).read_text().strip()
        except OSError as e:
            raise DeployError(f"cannot read the agent token file {token_file}: {e.strerror}.") from None
        if not token:
            raise DeployError(f"the agent token file {token_file} is empty.")
        return token
    return os.environ.get(TOKEN_ENV) or None


def timing_from_result(latency_ms: dict, threads: int | None) -> Timing:
    """The agent's ``latency_ms`` statistics as a :class:`Timing` (the same fields fit and calibrate read)."""
    try:
        p50, p90 = float(latency_ms["p50"]), float(latency_ms["p90"])
        rounds = latency_ms.get("round_p50")
        return Timing(p50_ms=p50, p90_ms=p90, p99_ms=float(latency_ms["p99"]), mean_ms=float(latency_ms["mean"]),
                      std_ms=float(latency_ms["std"]), min_ms=float(latency_ms["min"]),
                      max_ms=float(latency_ms["max"]), spread=p90 / p50 - 1.0 if p50 > 0 else 0.0,
                      n=int(latency_ms["n"]), warmup=int(latency_ms.get("warmup") or 0),
                      total_s=float(latency_ms["total_s"]), threads=threads,
                      round_p50_ms=tuple(float(r) for r in rounds) if rounds else None)
    except (KeyError, TypeError, ValueError) as e:
        raise DeployError(f"the agent's result has no usable latency_ms ({e!r}); is the runner up to date?") from None


def settings_query(settings: TimingSettings) -> dict:
    """The timing settings as the query parameters of ``POST /v1/measure``."""
    return {k: (f"{v:g}" if isinstance(v, float) else str(v)) for k, v in settings.to_dict().items()}


def check_device(facts: dict, target, accept: bool = False,
                 accepted_as: str = "accepted with --accept-device") -> list[str]:
    """Warnings about an agent's facts for ``target``; a contradiction is a DeployError unless ``accept``.

    Contradictions: a TensorRT target on a device without TensorRT; a Jetson target on something
    that is not a Jetson (or not aarch64); a Raspberry Pi target on a machine that is not ARM.
    """
    machine = str(facts.get("machine") or "?")
    model = str(facts.get("model") or facts.get("cpu_model") or "?")
    runtimes = facts.get("runtimes") or {}
    problems, warnings = [], []
    if target.runtime == "tensorrt" and not runtimes.get("tensorrt"):
        problems.append(f"target '{target.name}' runs TensorRT but the agent's device has no TensorRT (trtexec)")
    if target.name.startswith("jetson") and not (facts.get("jetson") and machine == "aarch64"):
        problems.append(f"target '{target.name}' is a Jetson but the device is {model} ({machine})")
    if target.name.startswith("raspberry-pi") and machine not in ("aarch64", "armv7l"):
        problems.append(f"target '{target.name}' is a Raspberry Pi but the device is {model} ({machine})")
    if target.runtime == "onnxruntime" and not runtimes.get("onnxruntime"):
        problems.append(f"target '{target.name}' runs ONNX Runtime but the agent's device has none installed")
    if target.name.startswith("raspberry-pi") and "raspberry" not in model.lower() and not problems:
        warnings.append(f"target '{target.name}': the device says it is '{model}', not a Raspberry Pi")
    governor = facts.get("cpu_governor")
    if governor and governor != "performance":
        warnings.append(f"the device's CPU governor is '{governor}', not 'performance': timings may drift")
    if problems and not accept:
        raise DeployError("; ".join(problems) + ". Measure on the right device, or pass --accept-device to use it "
                                                "anyway (its timings will be labelled with what it really is).")
    return [*(f"{p} ({accepted_as})" for p in problems), *warnings]


class AgentDevice(Device):
    """``target`` measured by the agent at ``url`` (``http://HOST:PORT``)."""

    def __init__(self, url: str, target, *, token: str | None = None, threads: int | None = None,
                 timeout_s: float = 900.0):
        parsed = urllib.parse.urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise DeployError(f"--agent must be an http(s) URL such as http://192.168.1.20:8765, not '{url}'.")
        self.url = url.rstrip("/")
        self.target = target
        self.name = target.name
        self.token = token
        self.threads = threads or target.threads
        self.timeout_s = timeout_s
        self._facts: dict | None = None
        self._max_body: int | None = None  # the agent's upload cap in bytes, where its /v1/info states it
        self._runtimes: list[str] = []

    # --- HTTP ----------------------------------------------------------------------------------

    def _request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, dict]:
        """One request; (status, JSON body) for 200 and 422, a DeployError for anything else."""
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if body is not None:
            headers["Content-Type"] = "application/octet-stream"
        for _ in range(MAX_BUSY_RETRIES + 1):
            req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                    return resp.status, self._json(resp.read())
            except urllib.error.HTTPError as e:
                payload = self._json(e.read(), strict=False)
                if e.code == 429:
                    time.sleep(self._retry_after(e.headers.get("Retry-After")))
                    continue
                if e.code == 422:
                    return e.code, payload
                raise self._http_error(e.code, payload) from None
            except urllib.error.URLError as e:
                if body is not None and isinstance(e.reason, (BrokenPipeError, ConnectionResetError)):
                    raise self._upload_reset(len(body)) from None
                raise AgentUnreachable(f"cannot reach the measurement agent at {self.url}: {e.reason}; is "
                                         "`deploy agent serve` (or edgefit_device.py serve) running there?") from None
            except (BrokenPipeError, ConnectionResetError) as e:
                raise AgentUnreachable(f"the measurement agent at {self.url} dropped the connection: {e}.") from None
            except (TimeoutError, OSError) as e:
                raise AgentUnreachable(f"the measurement agent at {self.url} did not answer: {e}.") from None
        raise DeployError(f"the measurement agent at {self.url} stayed busy (429) for {MAX_BUSY_RETRIES} tries; "
                          "try again when its queue has drained.")

    def _upload_reset(self, size: int) -> DeployError:
        """Why the agent closed the connection during an upload: the body was over its cap, or it went away.

        The two look the same from here (a reset). An agent that states its cap in ``/v1/info``
        settles it; for one that does not, a fresh ``/v1/info`` tells a live agent (so: too large)
        from one that is gone (:class:`AgentUnreachable`, which a farm answers by re-sending the job).
        """
        mib = size / 2**20
        if self._max_body is not None and size <= self._max_body:
            return AgentUnreachable(f"the measurement agent at {self.url} closed the connection while the model "
                                    f"({mib:.1f} MiB, under its {self._max_body / 2**20:.0f} MiB cap) was "
                                    "uploading: it stopped or restarted.")
        try:
            self._request("GET", "/v1/info")
        except AgentUnreachable as exc:
            return AgentUnreachable(f"the measurement agent at {self.url} went away while the model was uploading "
                                    f"({exc})")
        except DeployError:
            pass
        return DeployError(f"the measurement agent at {self.url} closed the connection while the model "
                           f"({mib:.1f} MiB) was uploading: most likely it is too large for the agent (raise its "
                           "--max-body-mb).")

    @staticmethod
    def _retry_after(value: str | None) -> float:
        try:
            return min(max(float(value), 0.0), MAX_RETRY_AFTER_S) if value else 1.0
        except ValueError:
            return 1.0

    def _json(self, raw: bytes, strict: bool = True) -> dict:
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            if not strict:
                return {"error": raw[:200].decode("utf-8", "replace").strip()}
            raise DeployError(f"the measurement agent at {self.url} answered something that is not JSON.") from None
        if not isinstance(data, dict):
            raise DeployError(f"the measurement agent at {self.url} answered JSON that is not an object.")
        return data

    def _http_error(self, code: int, payload: dict) -> DeployError:
        message = payload.get("error") or f"HTTP {code}"
        if code == 401:
            which = "wrong" if self.token else "missing"
            return DeployError(f"the measurement agent at {self.url} refused the token ({which}): {TOKEN_HINT}.")
        if code == 413:
            return DeployError(f"the model is too large for the agent at {self.url}: {message} (raise its "
                               "--max-body-mb).")
        if code == 504:
            return DeployError(f"the measurement timed out on the agent at {self.url}: {message}.")
        return DeployError(f"the measurement agent at {self.url} refused the request (HTTP {code}): {message}.")

    # --- Device --------------------------------------------------------------------------------

    def info(self) -> dict:
        """``GET /v1/info``: ``{"facts": {...}, "runtimes": [...], "max_body_bytes": N}`` (cached once read)."""
        if self._facts is None:
            _, data = self._request("GET", "/v1/info")
            if not isinstance(data.get("facts"), dict):
                raise DeployError(f"the measurement agent at {self.url} sent no facts; is it an edgefit agent?")
            self._facts, self._runtimes = data["facts"], list(data.get("runtimes") or [])
            cap = data.get("max_body_bytes")
            self._max_body = cap if isinstance(cap, int) and not isinstance(cap, bool) and cap > 0 else None
        return {"facts": dict(self._facts), "runtimes": list(self._runtimes)}

    def facts(self) -> dict:
        return self.info()["facts"]

    @property
    def label(self) -> str:
        """How fit.json names this device: the target, what the agent says it is, and where it is."""
        return f"{self.target.name}: {self.facts().get('model', '?')} (agent {self.url})"

    def measure(self, model: str | Path, settings: TimingSettings, *, precision: str = "fp32",
                memory: bool = True, reference: bool = False) -> DeviceMeasurement:
        """Send ``model``'s bytes to the agent and time them there (``memory`` is measured whenever it can be).

        The agent has no reference model (``supports_reference`` is False): ``reference`` is ignored.
        """
        data = Path(model).read_bytes()
        self.info()  # the agent's cap: a model over it is refused here, not after uploading it
        if self._max_body is not None and len(data) > self._max_body:
            raise DeployError(f"the model is too large for the agent at {self.url}: {len(data) / 2**20:.1f} MiB "
                              f"is over its {self._max_body / 2**20:.0f} MiB cap (raise its --max-body-mb).")
        sent = sha256_bytes(data)
        query = {"runtime": self.target.runtime, "precision": precision, **settings_query(settings)}
        if self.threads and self.target.runtime == "onnxruntime":
            query["threads"] = str(self.threads)
        status, result = self._request("POST", "/v1/measure?" + urllib.parse.urlencode(query), data)
        if status != 200 or not result.get("ok", False):
            raise DeployError(f"the agent at {self.url} could not measure {Path(model).name}: "
                              f"{result.get('error', 'no message')}.")
        if result.get("sha256") != sent:
            raise DeployError(f"the agent at {self.url} measured other bytes than {Path(model).name} "
                              f"(sha256 {str(result.get('sha256'))[:12]}… != {sent[:12]}…): the upload was corrupted.")
        threads = result.get("threads")
        mem = result.get("peak_memory_mb")
        runtime = {k: v for k, v in (result.get("runtime") or {}).items() if v is not None}
        runtime.setdefault("name", self.target.runtime)
        return DeviceMeasurement(
            latency=timing_from_result(result.get("latency_ms") or {}, threads), memory_mb=None if mem is None
            else float(mem), device=self.label, runtime=runtime, threads=threads, settings=settings,
            when=str(result.get("when") or ""), model_sha256=sent, memory_method=result.get("memory_method"),
            facts=self.facts(), agent=self.url)




def verify_on_agent(run_dir: str | Path, device: Device, settings: TimingSettings):
    """Re-measure ``RUN_DIR/model.onnx`` on ``device``, record it as ``measured`` and re-judge the run.

    Returns ``(record, judgement)``; fit.json is rewritten atomically with the agent's measurement
    and the new ``verified``. The caller decides what a failed judgement means (``deploy verify``: exit 4).
    """
    from pipeline.record.rundir import read_record, write_record
    from pipeline.record.schema import AgentMeasured
    from pipeline.record.verdict import judge_record

    run_dir = Path(run_dir)
    record = read_record(run_dir)
    model = run_dir / str(record.artifacts.onnx)
    if not model.is_file():
        raise DeployError(f"{model} is missing: verify needs the run's shipped model.")
    m = device.measure(model, settings, precision=record.precision)
    t = m.latency
    record.measured = AgentMeasured(
        latency_ms=round(t.p50_ms, 4), latency_ms_p90=round(t.p90_ms, 4), latency_ms_p99=round(t.p99_ms, 4),
        memory_mb=None if m.memory_mb is None else round(m.memory_mb, 2), device=m.device, threads=m.threads,
        method=m.method, latency_ms_worst_round=round(t.worst_round_p50_ms, 4), when=m.when, repeats=t.n,
        agent=m.agent or "", model_sha256=m.model_sha256, facts=m.facts)
    judgement = judge_record(record)
    record.verified = judgement.verified
    write_record(run_dir, record)
    return record, judgement


__all__ = ["TOKEN_ENV", "AgentDevice", "check_device", "read_token", "settings_query",
           "timing_from_result", "verify_on_agent"]
