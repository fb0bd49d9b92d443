"""Per-source health of built scene stores: windows built and dropped (with reasons), command agreement with the
expert, expert inside the drivable area, and (from ``irlvla score`` output) the logged human's DAC.

Usage (the README's real-data table is produced this way)::

    irlvla scenes build --source scenarionet --path ../shared/data/scenarionet_waymo --out real/waymo
    ...                                                     # one store per source
    python -m irlvla_gym.scenes.report real/* --human-plans plans/    # writes plans/<store>.npz (expert futures)
    irlvla score --scenes real/waymo --plans plans/waymo.npz --no-filter --out scores/waymo   # per store
    python -m irlvla_gym.scenes.report real/* --scores scores/        # the table, human DAC column included

Definitions (per store):

* built: scenes in the store; dropped: the store's skipped items, counted per reason
  (:func:`~irlvla_gym.scenes.sources.skipped_by_reason`).
* command agreement: share of scenes whose command equals :func:`command_from_lateral` of the expert's lateral
  offset at 4 s (the route-derived command vs where the logged driver actually went).
* expert in drivable area: share of the 8 future rear-axle poses of all scenes inside the map's drivable-area layer
  (lanes not added: the layer the issue's city-mismatch finding measured).
* human DAC: mean drivable-area compliance of the expert's plan scored with the human filter OFF (``irlvla score
  --no-filter``: the scorer's tracked replay of the plan), i.e. the share of windows the human passes. The scorer
  sits in the same layer but imports this package, so it is run as its own command rather than imported here.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from irlvla_gym.scenes.scene import command_from_lateral
from irlvla_gym.scenes.sources import skipped_by_reason

__all__ = ["StoreReport", "store_report", "write_human_plans", "human_dac", "format_reports", "main"]


@dataclass
class StoreReport:
    """The figures of one store (module docs).

    Attributes:
        name: the store folder's name; source: the store's source.
        built: scenes; dropped: skipped items; reasons: (reason, count) most frequent first.
        command_agreement: share in [0, 1] (NaN without scenes).
        expert_in_drivable: share in [0, 1] of future poses inside the drivable-area layer.
        human_dac: share in [0, 1] from ``irlvla score --no-filter`` (None if not given); human_dac_windows: scored.
    """

    name: str
    source: str
    built: int
    dropped: int
    reasons: list[tuple[str, int]] = field(default_factory=list)
    command_agreement: float = float("nan")
    expert_in_drivable: float = float("nan")
    human_dac: float | None = None
    human_dac_windows: int = 0


def store_report(store_dir: str | Path) -> StoreReport:
    """Read a store and compute its :class:`StoreReport` (without the human DAC)."""
    import shapely

    from irlvla_gym.scenes.store import SceneStore

    store = SceneStore(store_dir, verify=False)
    agree, inside, poses = 0, 0, 0
    for scene in store:
        future = np.asarray(scene.ego.future, np.float64)
        agree += int(scene.command == command_from_lateral(float(future[-1, 1])))
        parts = scene.map.drivable_area.to_shapely()
        if len(parts):
            area = shapely.unary_union(parts)
            inside += int(shapely.contains_xy(area, future[:, 0], future[:, 1]).sum())
        poses += len(future)
    skipped = store.skipped
    n = len(store)
    return StoreReport(name=Path(store_dir).name, source=store.source, built=n, dropped=len(skipped),
                       reasons=[(reason, count) for reason, count, _ in skipped_by_reason(skipped)],
                       command_agreement=agree / n if n else float("nan"),
                       expert_in_drivable=inside / poses if poses else float("nan"))


def write_human_plans(store_dir: str | Path, out_file: str | Path) -> int:
    """Write the expert futures of a store as an ``irlvla score`` plans file (``.npz``: tokens (N,), plans
    (N, 8, 3) [x, y, yaw] in m / rad, t0 ego frame); returns N."""
    from irlvla_gym.scenes.store import SceneStore

    store = SceneStore(store_dir, verify=False)
    tokens = np.asarray([s.token for s in store], dtype=str)
    plans = np.stack([np.asarray(s.ego.future, np.float64) for s in store]) if len(store) else np.zeros((0, 8, 3))
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out_file, tokens=tokens, plans=plans)
    return len(tokens)


def human_dac(scores_dir: str | Path) -> tuple[float, int]:
    """(mean DAC, scored windows) from an ``irlvla score`` output folder (its ``scores.json`` rows).

    Raises:
        FileNotFoundError: no scores.json there.
        ValueError: it was scored with the human filter on, or a row is malformed (names the file and field).
    """
    path = Path(scores_dir) / "scores.json"
    summary_path = Path(scores_dir) / "summary.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (run irlvla score --no-filter --out {scores_dir})")
    if summary_path.is_file():
        settings = json.loads(summary_path.read_text()).get("settings", {})
        if settings.get("human_filter", False):
            raise ValueError(f"{summary_path}: field 'settings.human_filter' is true; the human's DAC needs "
                             "irlvla score --no-filter")
    rows = json.loads(path.read_text())
    try:
        dac = [float(r["dac"]) for r in rows if r.get("status") == "ok"]
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: field 'dac': missing or not a number ({exc})") from None
    return (float(np.mean(dac)) if dac else float("nan")), len(dac)


def _pct(x: float | None) -> str:
    return "-" if x is None or not np.isfinite(x) else f"{100 * x:.1f} %"


def format_reports(reports: Sequence[StoreReport]) -> str:
    """A Markdown table, one row per store, then the drop reasons."""
    lines = ["| store | source | windows built | dropped | command agrees with expert | expert in drivable area "
             "| human DAC, filter off |", "|---|---|---:|---:|---:|---:|---:|"]
    for r in reports:
        dac = "-" if r.human_dac is None else f"{_pct(r.human_dac)} ({r.human_dac_windows})"
        lines.append(f"| {r.name} | {r.source} | {r.built} | {r.dropped} | {_pct(r.command_agreement)} | "
                     f"{_pct(r.expert_in_drivable)} | {dac} |")
    for r in reports:
        for reason, count in r.reasons:
            lines.append(f"- {r.name}: {count} dropped: {reason}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m irlvla_gym.scenes.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("stores", nargs="+", type=Path, help="scene store folders (irlvla scenes build --out)")
    parser.add_argument("--human-plans", type=Path, default=None,
                        help="write each store's expert futures to DIR/<store>.npz for irlvla score")
    parser.add_argument("--scores", type=Path, default=None,
                        help="folder of irlvla score --no-filter outputs, one per store: DIR/<store>/scores.json")
    parser.add_argument("--json", action="store_true", help="print the reports as JSON")
    args = parser.parse_args(argv)
    reports = []
    for store_dir in args.stores:
        report = store_report(store_dir)
        if args.human_plans is not None:
            n = write_human_plans(store_dir, args.human_plans / f"{report.name}.npz")
            print(f"wrote {args.human_plans / (report.name + '.npz')} ({n} plans)", file=sys.stderr)
        if args.scores is not None and (args.scores / report.name).is_dir():
            report.human_dac, report.human_dac_windows = human_dac(args.scores / report.name)
        reports.append(report)
    print(json.dumps([r.__dict__ for r in reports], indent=1) if args.json else format_reports(reports))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
