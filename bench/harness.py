"""What the benchmarks share: the production deployment of tests/deployment.py, and figures."""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.deployment import Deployment  # noqa: E402

__all__ = ["Deployment", "ROOT", "percentile", "scratch_dir", "summary"]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def summary(latencies: list[float]) -> str:
    ms = [v * 1000 for v in latencies]
    return (
        f"p50 {percentile(ms, 50):.1f} ms, p99 {percentile(ms, 99):.1f} ms, "
        f"mean {statistics.fmean(ms):.1f} ms"
    )


def scratch_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="segflow-bench-"))
