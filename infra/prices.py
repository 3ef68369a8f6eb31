"""AWS's list prices the project's cost figures use (prices.json: their region, date and sources), and
what starting a transform job costs. Read by `make cost` and by `make compare`'s estimate; beside
them, the model server's recorded rates by CPU class (cpu_class_rates.json)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PRICES = Path(__file__).with_name("prices.json")
# The model server's images/s by CPU class, recorded from a run of make cost (its date, machine and
# command inside): tests check the template's TransformInstanceType and AutoBatchThreshold by them.
CPU_CLASS_RATES = Path(__file__).with_name("cpu_class_rates.json")


def load_prices(path: Path = PRICES) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


def load_cpu_class_rates(path: Path = CPU_CLASS_RATES) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


def job_cost(prices: dict[str, Any], instance_type: str, instance_count: int) -> float:
    """What starting one transform job costs: its instances' start-up time."""
    per_s = prices["transform_instance_per_hour"][instance_type] / 3600
    return float(prices["transform_startup_seconds"] * instance_count * per_s)
