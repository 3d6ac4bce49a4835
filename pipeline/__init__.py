"""edgefit: fit compound-scaled neural networks to edge-device latency and memory budgets."""

__version__ = "0.1.0"
