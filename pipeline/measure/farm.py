"""Several identical devices behind their agents, used as one :class:`Device`: a device farm.

``--agent URL1 --agent URL2`` (or ``--agent farm.txt``, a file of URLs) gives a :class:`Farm`:

* **Same device, or refused.** Every agent is asked what it is; agents whose identifying facts
  (:data:`IDENTITY`: machine, model, CPU, core count, memory, runtimes, Jetson power mode) differ
  are refused unless ``--accept-device``, because a profile mixing two kinds of device would
  predict neither. Each agent is also checked against the target (:func:`check_device`).
* **Whichever agent is free.** :meth:`Farm.measure` waits for an idle agent and sends it the job;
  ``slots`` (one per live agent) tells ``deploy calibrate`` how many models to keep in flight, so
  the suite is split between the agents. ``deploy fit``'s loop measures one model at a time and
  simply gets the first free agent.
* **An agent that stops answering is dropped** (:class:`AgentUnreachable`: refused, reset or timed
  out connections) and its job is sent to another; only when none is left does the job fail. A
  real error from an agent (a model it cannot run) is not retried: it would fail everywhere.

Every :class:`~pipeline.measure.device.DeviceMeasurement` names the agent that made it (``agent``),
which the profile and ``fit.json`` record.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from pipeline.core.errors import AgentUnreachable, DeployError, UsageError
from pipeline.measure.agent import AgentDevice, check_device, read_token
from pipeline.measure.device import Device, DeviceMeasurement
from pipeline.measure.settings import TimingSettings

IDENTITY = ("machine", "model", "cpu_model", "cpu_count", "memory_mb", "runtimes", "jetson", "nvpmodel")


def agent_urls(values: str | Sequence[str] | None) -> list[str]:
    """The agent URLs of ``--agent`` values: URLs as given, or files holding one URL per line (``#`` comments)."""
    if values is None:
        return []
    urls: list[str] = []
    for value in [values] if isinstance(values, str) else values:
        if value.startswith(("http://", "https://")):
            urls.append(value)
            continue
        path = Path(value)
        if not path.is_file():
            raise UsageError(f"--agent {value!r} is neither an http(s) URL nor a file of URLs.")
        lines = [line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines()]
        found = [line for line in lines if line]
        if not found:
            raise UsageError(f"agent file {path} lists no URL (one http://HOST:PORT per line).")
        urls.extend(found)
    if len(set(urls)) != len(urls):
        dup = next(u for u in urls if urls.count(u) > 1)
        raise UsageError(f"agent {dup} is given twice; each agent is one device.")
    return urls


def identity(facts: dict) -> dict:
    return {k: facts.get(k) for k in IDENTITY}


class Farm(Device):
    """Agents on identical devices; a job goes to a free one, a dead one is dropped and its job re-sent."""

    def __init__(self, agents: Sequence[AgentDevice], log: Callable[[str], None] = lambda _: None):
        if not agents:
            raise UsageError("a farm needs at least one agent.")
        self.agents = list(agents)
        self.target = agents[0].target
        self.name = agents[0].name
        self.log = log
        self._idle = list(self.agents)
        self._alive = list(self.agents)
        self._dropped: list[str] = []
        self._cond = threading.Condition()

    @property
    def slots(self) -> int:  # type: ignore[override]
        with self._cond:
            return max(1, len(self._alive))

    @property
    def dropped(self) -> list[str]:
        return list(self._dropped)

    def facts(self) -> dict:
        with self._cond:
            first = self._alive[0] if self._alive else self.agents[0]
            urls = [a.url for a in self._alive]
        return {**first.facts(), "agents": urls}

    def check(self, accept: bool = False) -> list[str]:
        """Warnings; a DeployError when the agents are not the same device (or not the target) unless ``accept``."""
        warnings: list[str] = []
        first = self.agents[0]
        for agent in self.agents:
            warnings += [f"{agent.url}: {w}" for w in check_device(agent.facts(), self.target, accept=accept)]
            if agent is first:
                continue
            a, b = identity(first.facts()), identity(agent.facts())
            diff = [k for k in IDENTITY if a[k] != b[k]]
            if diff:
                what = ", ".join(f"{k} {a[k]!r} vs {b[k]!r}" for k in diff[:3])
                if not accept:
                    raise DeployError(f"agents {first.url} and {agent.url} are not the same device ({what}); a farm "
                                      "must be identical devices. Drop one, or pass --accept-device.")
                warnings.append(f"{agent.url} differs from {first.url} ({what}) (accepted with --accept-device)")
        return warnings

    def _take(self) -> AgentDevice:
        with self._cond:
            while not self._idle:
                if not self._alive:
                    raise DeployError(f"every measurement agent stopped answering ({', '.join(self._dropped)}); "
                                      "restart them and run again.")
                self._cond.wait()
            return self._idle.pop(0)

    def _give_back(self, agent: AgentDevice, alive: bool) -> None:
        with self._cond:
            if alive:
                self._idle.append(agent)
            else:
                self._alive.remove(agent)
                self._dropped.append(agent.url)
            self._cond.notify_all()

    def measure(self, model: str | Path, settings: TimingSettings, *, precision: str = "fp32",
                memory: bool = True, reference: bool = False) -> DeviceMeasurement:
        """Time ``model`` on the first free agent; an agent that stops answering is dropped and the job re-sent.

        Agents time no reference model (``supports_reference`` is False), so ``reference`` is ignored.
        """
        while True:
            agent = self._take()
            try:
                result = agent.measure(model, settings, precision=precision, memory=memory)
            except AgentUnreachable as exc:
                self._give_back(agent, alive=False)
                self.log(f"warning: dropped agent {agent.url} ({exc}); re-sending {Path(model).name} to another")
                continue
            except BaseException:
                self._give_back(agent, alive=True)
                raise
            self._give_back(agent, alive=True)
            return result


def agent_device(agents: str | Sequence[str], target, *, token_file: str | Path | None = None,
                 threads: int | None = None, accept: bool = False,
                 log: Callable[[str], None] = lambda _: None) -> Device:
    """The device behind ``--agent`` values: one :class:`AgentDevice`, or a :class:`Farm` of several; checked.

    In a farm, an agent that does not answer at the start is left out with a warning; the farm
    needs one that answers.
    """
    urls = agent_urls(agents)
    if not urls:
        raise UsageError("no agent given.")
    token = read_token(token_file)
    devices = [AgentDevice(url, target, token=token, threads=threads) for url in urls]
    if len(devices) == 1:
        for warning in check_device(devices[0].facts(), target, accept=accept):
            log(f"warning: {warning}")
        return devices[0]
    alive = []
    for device in devices:
        try:
            device.facts()
        except AgentUnreachable as exc:
            log(f"warning: leaving out agent {device.url}: {exc}")
            continue
        alive.append(device)
    if not alive:
        raise AgentUnreachable(f"none of the {len(devices)} agents answers ({', '.join(urls)}).")
    farm = Farm(alive, log=log)
    for warning in farm.check(accept):
        log(f"warning: {warning}")
    return farm


__all__ = ["IDENTITY", "Farm", "agent_device", "agent_urls", "identity"]
