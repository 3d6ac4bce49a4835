"""Names of the calibration probes (:mod:`pipeline.models.probes`), importable without torch.

The calibration suites list them; a test keeps this list equal to the probes that exist.
"""

PROBE_NAMES = ("grouped-gw4", "grouped-gw32", "odd-channels", "odd-depthwise", "kernel7", "kernel5-linear", "tokens",
               "split-shuffle", "excite", "wide-head")
QUICK_PROBES = ("grouped-gw4", "odd-channels", "kernel7", "tokens", "split-shuffle", "excite", "wide-head")

__all__ = ["PROBE_NAMES", "QUICK_PROBES"]
