"""The one place that decides ``verified``: did the shipped model meet its budget and its accuracy?

Every verdict is ``True`` (checked, passed), ``False`` (checked, failed, with the message
saying which number missed which limit) or ``None`` (not checked: nothing was measured,
or there is no such budget). ``deploy fit`` (:mod:`pipeline.fit.flow`), ``deploy verify
--trtexec-times`` (:mod:`pipeline.engine.trtexec`), the accuracy steps of fit
(:mod:`pipeline.fit.steps`) and ``deploy verify --data`` (:mod:`pipeline.train.verify`)
all take their verdict, and their exit-4 decision, from here.

Verifying is not choosing. The closed loop (:mod:`pipeline.measure.loop`) *chooses* the
architecture to ship with a safety margin: a candidate must measure under the budget
*less* the noise margin (``Budget.noise_margin_pct``), judged for p50 budgets on the
slowest of several timing rounds, so that the model it picks still fits when somebody
re-times it a moment later. Verifying then states a fact about the shipped model: its
measured statistic at the budget's percentile (p50: the measured p50 over all rounds;
p90/p99: those percentiles) against the budget itself, no margin. The margin belongs to
the decision; the verdict must not move with it.

One exception to "no margin", and it only ever *explains* a failure: when the shipped file
measured over its budget and slower than the same architecture measured before, the closed loop
times it again interleaved with a reference model (:func:`pipeline.measure.loop.check_shipped`).
If the reference slowed down as much, the excess was the machine's load and the latency verdict
is ``True`` (the record keeps the raw measurement and the check beside it, in ``noise.check``);
if the excess survives dividing the load out, it fails and the message says it was not the load.

The comparisons themselves may live next to their measurements (``verify_accuracy``
compares torch and ONNX top-1 against its thresholds and lists what failed); what those
failures *mean* for ``verified`` and the exit code is decided here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from pipeline.core.errors import VerificationFailed


class Verdict(NamedTuple):
    """``ok``: True / False / None (not checked); ``failure``: why it failed, when it did."""

    ok: bool | None
    failure: str | None = None


NOT_CHECKED = Verdict(None)


class BudgetLike(Protocol):
    """:class:`pipeline.fit.search.Budget` or the record's ``budget``."""

    latency_ms: float | None
    memory_mb: float | None
    percentile: int


def _get(obj: Any, key: str, default: Any = None) -> Any:
    """A field of a record model, a dataclass or a plain dict (fit's steps still pass dicts)."""
    if isinstance(obj, Mapping):
        return obj.get(key, default)
    return getattr(obj, key, default)


def judged_latency(measured: Any, percentile: int) -> float:
    """The measured latency a budget at ``percentile`` is verified against (p50 = the measured p50)."""
    key = {50: "latency_ms", 90: "latency_ms_p90", 99: "latency_ms_p99"}[int(percentile)]
    return float(_get(measured, key))


def _where(measured: Any) -> str:
    device, source = _get(measured, "device"), _get(measured, "source")
    return (f" on {device}" if device else "") + (f" ({source})" if source else "")


def latency_verdict(measured: Any, budget: BudgetLike, load_check: Any = None) -> Verdict:
    """The measured latency at the budget's percentile against the latency budget (None: unmeasured/no budget).

    ``load_check`` (``noise.check`` of the record): a re-measurement next to the reference model; its
    verdict ``"load"`` turns a raw excess into a pass, ``"slower"`` says why it fails.
    """
    limit = _get(budget, "latency_ms")
    if measured is None or limit is None:
        return NOT_CHECKED
    pct = int(_get(budget, "percentile"))
    stat = judged_latency(measured, pct)
    if stat <= float(limit):
        return Verdict(True)
    failure = (f"measured p{pct} latency {stat:.3f} ms{_where(measured)} is over the budget of "
               f"{float(limit):g} ms")
    if load_check is not None:
        if _get(load_check, "verdict") == "load":
            return Verdict(True)
        failure += f", and not because of the machine's load ({_get(load_check, 'detail')})"
    return Verdict(False, failure)


def memory_verdict(measured: Any, budget: BudgetLike) -> Verdict:
    """The measured peak memory against the memory budget (None: not measured, or no memory budget)."""
    limit = _get(budget, "memory_mb")
    memory = None if measured is None else _get(measured, "memory_mb")
    if memory is None or limit is None:
        return NOT_CHECKED
    if float(memory) <= float(limit):
        return Verdict(True)
    return Verdict(False, f"measured peak memory {float(memory):g} MiB{_where(measured)} is over the budget of "
                          f"{float(limit):g} MiB")


def comparison_verdict(failures: Iterable[str]) -> Verdict:
    """A check that lists what failed (empty: passed), e.g. torch-vs-ONNX accuracy."""
    failures = list(failures)
    return Verdict(not failures, "; ".join(failures) or None)


def accuracy_verdict(accuracy: Any, int8: Mapping | None, min_accuracy: float | None = None) -> Verdict:
    """Accuracy of the shipped model: torch-vs-ONNX failures, ``--min-accuracy`` and the (gated) INT8 drop.

    ``None`` when nothing was checked: no accuracy measured (untrained weights) and no
    gated INT8 comparison (an untrained model's INT8 agreement says nothing).
    """
    gated = bool(int8 is not None and int8.get("gated"))
    if accuracy is None and not gated:
        return NOT_CHECKED
    problems: list[str] = []
    if accuracy is not None:
        problems += list(_get(accuracy, "failures") or [])
        onnx = float(_get(accuracy, "onnx"))
        if min_accuracy is not None and onnx < min_accuracy:
            problems.append(f"accuracy {onnx:.4f} on {_get(accuracy, 'dataset')} is below --min-accuracy "
                            f"{min_accuracy:g} (the best the largest fitting model reached)")
    if gated and not int8["gate"]["passed"]:
        g = int8["gate"]
        problems.append(f"int8 drop {g['drop_pp']:.2f} pp > {g['max_drop_pp']:g} pp")
    return comparison_verdict(problems)


@dataclass(frozen=True)
class Judgement:
    """The three verdicts of one run."""

    latency: Verdict = NOT_CHECKED
    memory: Verdict = NOT_CHECKED
    accuracy: Verdict = NOT_CHECKED

    @property
    def verified(self):
        """The record's ``verified`` sub-record."""
        from pipeline.record.schema import Verified

        return Verified(latency=self.latency.ok, memory=self.memory.ok, accuracy=self.accuracy.ok)

    @property
    def failures(self) -> list[str]:
        return [v.failure or "failed" for v in (self.latency, self.memory, self.accuracy) if v.ok is False]

    def raise_if_failed(self, see: str | Path | None = None) -> None:
        raise_if_failed(self.latency, self.memory, self.accuracy, see=see)


def judge(measured: Any, budget: BudgetLike, accuracy: Any = None, int8: Mapping | None = None,
          min_accuracy: float | None = None, load_check: Any = None) -> Judgement:
    return Judgement(latency_verdict(measured, budget, load_check), memory_verdict(measured, budget),
                     accuracy_verdict(accuracy, int8, min_accuracy))


def judge_record(record) -> Judgement:
    """The verdicts of a :class:`~pipeline.record.schema.RunRecord` (``--min-accuracy`` is in its ``accuracy``)."""
    acc = record.accuracy
    noise = getattr(record, "noise", None)
    # a load check speaks about the measurement it was made with; a later `deploy verify` replaces `measured`
    check = noise.check if noise is not None and noise.check is not None and record.measured is not None and \
        abs(judged_latency(record.measured, record.budget.percentile) - noise.check.model_ms) < 1e-3 else None
    return judge(record.measured, record.budget, acc, record.int8, acc.min_accuracy if acc is not None else None,
                 check)


def verified(latency: Verdict, memory: Verdict, accuracy: Verdict):
    """The ``verified`` sub-record from three verdicts."""
    return Judgement(latency, memory, accuracy).verified


def raise_if_failed(*verdicts: Verdict, context: str = "", see: str | Path | None = None) -> None:
    """:class:`VerificationFailed` (exit 4) naming every failed check; nothing when none failed."""
    failures = [v.failure or "failed" for v in verdicts if v.ok is False]
    if failures:
        raise VerificationFailed(context + "; ".join(failures) + (f"; see {see}." if see else "."))


__all__ = ["NOT_CHECKED", "Judgement", "Verdict", "accuracy_verdict", "comparison_verdict", "judge", "judge_record",
           "judged_latency", "latency_verdict", "memory_verdict", "raise_if_failed", "verified"]
