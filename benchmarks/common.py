"""Small helpers shared by the speed benchmarks: one thread, timing, a results table, and ``--json`` output.

A benchmark module builds a list of :class:`BenchResult` and hands it to :func:`report`::

    from benchmarks.common import force_single_thread
    force_single_thread()  # before numpy/torch are imported
    from benchmarks.common import BenchResult, add_common_args, report
    ...
    report("scene benchmarks", results, as_json=args.json, meta={"num": args.num})
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
                   "VECLIB_MAXIMUM_THREADS", "IRLVLA_NUM_THREADS")


def force_single_thread() -> None:
    """Pin BLAS/OpenMP (and torch, if imported) to one thread, so numbers are per core and comparable.

    Call it before numpy is imported where possible; thread pools read these variables when they start.
    """
    for var in THREAD_ENV_VARS:
        os.environ[var] = "1"
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


@dataclass
class BenchResult:
    """One measured quantity.

    Attributes:
        name: what was measured ('store load (random access)').
        value: the measurement (None when it could not be measured; ``note`` says why).
        unit: unit of ``value`` ('scenes/s').
        goal: the goal as text ('>= 5000'), '' if there is none.
        passed: whether ``value`` meets the goal (None without a goal or a value).
        note: details (sample size, data used, why skipped).
        extra: more numbers for the JSON output.
    """

    name: str
    value: float | None
    unit: str
    goal: str = ""
    passed: bool | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def at_least(name: str, value: float | None, unit: str, threshold: float | None, note: str = "",
             **extra: Any) -> BenchResult:
    """A result whose goal is ``value >= threshold`` (no goal when ``threshold`` is None)."""
    goal = "" if threshold is None else f">= {threshold:.4g}"
    passed = None if threshold is None or value is None else bool(value >= threshold)
    return BenchResult(name, value, unit, goal, passed, note, dict(extra))


def skipped(name: str, unit: str, reason: str, threshold: float | None = None) -> BenchResult:
    """A result that could not be measured (missing data or module)."""
    return at_least(name, None, unit, threshold, note=f"skipped: {reason}")


@contextmanager
def stopwatch() -> Iterator[list[float]]:
    """``with stopwatch() as t: ...`` then ``t[0]`` is the elapsed wall time (s)."""
    out = [0.0]
    start = time.perf_counter()
    try:
        yield out
    finally:
        out[0] = time.perf_counter() - start


def shared_data_dir() -> Path | None:
    """``../shared/data`` beside the repository (or ``$IRLVLA_DATA``), None if absent."""
    env = os.environ.get("IRLVLA_DATA")
    repo = Path(__file__).resolve().parents[1]
    for cand in ([Path(env)] if env else []) + [repo.parent / "shared" / "data", repo / "shared" / "data"]:
        if cand.is_dir():
            return cand
    return None


def _fmt_value(v: float | None) -> str:
    if v is None:
        return "-"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.3g}"


def format_table(title: str, results: Sequence[BenchResult]) -> str:
    """A fixed-width text table: name | value | unit | goal | pass | note."""
    rows = [("benchmark", "value", "unit", "goal", "pass", "note")]
    for r in results:
        status = "-" if r.passed is None else ("PASS" if r.passed else "FAIL")
        rows.append((r.name, _fmt_value(r.value), r.unit, r.goal or "-", status, r.note))
    widths = [max(len(row[c]) for row in rows) for c in range(5)]
    lines = [title, ""]
    for k, row in enumerate(rows):
        cells = [row[0].ljust(widths[0]), row[1].rjust(widths[1]), row[2].ljust(widths[2]),
                 row[3].ljust(widths[3]), row[4].ljust(widths[4]), row[5]]
        lines.append("  ".join(cells).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 4)
    return "\n".join(lines)


def load_note() -> tuple[list[float], bool, str]:
    """(1-minute load averages now, noisy?, one line): a run is flagged noisy when the load average exceeds the
    core count, i.e. other work competed for the CPUs (speed goals may then FAIL for reasons outside the code)."""
    try:
        load = list(os.getloadavg())
    except OSError:  # not available on this platform
        return [], False, "load average: unavailable"
    cores = os.cpu_count() or 1
    noisy = load[0] > cores
    text = f"load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} on {cores} cores"
    if noisy:
        text += " -- NOISY: other work competed for the CPUs; wall-clock and per-second figures are unreliable"
    return load, noisy, text


def environment() -> dict[str, Any]:
    """Machine facts recorded with JSON results (the load average and the noisy flag included)."""
    import numpy as np

    load, noisy, _ = load_note()
    return {"python": platform.python_version(), "numpy": np.__version__, "platform": platform.platform(),
            "cpu_count": os.cpu_count(), "threads": os.environ.get("OMP_NUM_THREADS"), "loadavg": load,
            "noisy": noisy}


def to_json(name: str, results: Sequence[BenchResult], meta: dict[str, Any] | None = None) -> str:
    """One JSON object: benchmark name, meta (arguments), environment, results, all_passed."""
    goals = [r.passed for r in results if r.passed is not None]
    return json.dumps({"benchmark": name, "meta": meta or {}, "environment": environment(),
                       "results": [asdict(r) for r in results], "all_passed": all(goals) if goals else None})


def report(name: str, results: Sequence[BenchResult], *, as_json: bool = False,
           meta: dict[str, Any] | None = None) -> int:
    """Print the results (table or one JSON object). Returns 0 if no goal failed, else 1 (an exit status)."""
    if as_json:
        print(to_json(name, results, meta))
    else:
        print(format_table(name, results))
        print(load_note()[2])
    return 1 if any(r.passed is False for r in results) else 0


def add_common_args(parser) -> None:
    """``--json``: print one JSON object instead of the table."""
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
