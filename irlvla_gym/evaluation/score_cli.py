"""``irlvla score``: score a file of plans against a scene store (NAVSIM v2 EPDMS, EP normalised by PDM-Closed).

Input plans: a ``.json`` object ``{token: [[x, y, yaw] x 8], ...}`` (optionally wrapped as ``{"plans": {...}}``) or
an ``.npz`` whose keys are tokens with (8, 3) arrays (or the pair of arrays ``tokens`` (N,) and ``plans``
(N, 8, 3)). Poses are at t = 0.5 .. 4 s in the scene's t0 ego frame (rear axle, x forward, y left; m, rad).

Output (``--out DIR``, every file written atomically):

* ``scores.csv`` / ``scores.json``: one row per token: ``token, status, error, epdms, pdms, nc, dac, ddc, tlc, ep,
  ttc, lk, hc, ec, progress_m, reference_progress_m, filtered``. A plan that cannot be scored (token not in the
  store, wrong shape, NaN/inf, a jump faster than 50 m/s between consecutive poses, a scene that fails to load) gets
  ``status = "error"``, the reason in ``error`` and 0 for every score; the run goes on.
* ``summary.json``: the aggregate (mean EPDMS, PDMS and each sub-score over all tokens, errors counting 0; the same
  over the scored tokens only), counts and settings. The aggregate is also printed to stdout.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from irlvla_gym.metrics.config import SUB_SCORES

MAX_PLAN_SPEED = 50.0
"""[m/s] fastest implied speed between consecutive poses (origin included) a plan may have; faster is an error."""
PLAN_DT = 0.5
SCORE_COLUMNS = ("epdms", "pdms") + SUB_SCORES
CSV_COLUMNS = ("token", "status", "error") + SCORE_COLUMNS + ("progress_m", "reference_progress_m", "filtered")


# --------------------------------------------------------------------------------------------------------------------
# Reading and checking plans
# --------------------------------------------------------------------------------------------------------------------


def load_plans(path: str | Path) -> dict[str, object]:
    """Token -> raw plan (anything array-like; checked later by :func:`check_plan`) from a .json or .npz file.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: not a .json / .npz file, or unreadable as one.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"plans file {path} not found")
    suffix = path.suffix.lower()
    if suffix == ".json":
        try:
            data = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from None
        if isinstance(data, Mapping) and set(data) == {"plans"} and isinstance(data["plans"], Mapping):
            data = data["plans"]
        if not isinstance(data, Mapping):
            raise ValueError(f"{path}: expected a JSON object mapping token -> 8x3 poses")
        return {str(k): v for k, v in data.items()}
    if suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: not a readable .npz without pickles ({exc})") from None
        if set(arrays) == {"tokens", "plans"}:
            tokens, plans = arrays["tokens"], arrays["plans"]
            if tokens.ndim != 1 or len(plans) != len(tokens):
                raise ValueError(f"{path}: 'tokens' (N,) and 'plans' (N, 8, 3) must have the same length")
            return {str(t): plans[i] for i, t in enumerate(tokens.tolist())}
        return dict(arrays)
    raise ValueError(f"{path}: plans must be a .json or .npz file")


def check_plan(raw: object) -> tuple[np.ndarray | None, str]:
    """Validate one plan. Returns ``(plan (8, 3) float64, "")`` or ``(None, reason)``."""
    try:
        plan = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        return None, f"not a numeric array ({exc})"
    if plan.shape != (8, 3):
        return None, f"wrong shape {plan.shape}, expected (8, 3) poses [x, y, yaw] at t = 0.5 .. 4 s"
    if not np.all(np.isfinite(plan)):
        bad = np.argwhere(~np.isfinite(plan))[0]
        return None, f"non-finite value at pose {bad[0]}, column {'xy'[bad[1]] if bad[1] < 2 else 'yaw'}"
    steps = np.linalg.norm(np.diff(np.vstack([np.zeros(2), plan[:, :2]]), axis=0), axis=1) / PLAN_DT
    if steps.max() > MAX_PLAN_SPEED:
        k = int(np.argmax(steps))
        return None, (f"absurd speed {steps[k]:.1f} m/s between poses {k - 1 if k else 'origin'} and {k} "
                      f"(limit {MAX_PLAN_SPEED:g} m/s; wrong units or frame?)")
    return plan, ""


# --------------------------------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class ScoreRun:
    """Rows (one per token, :data:`CSV_COLUMNS`) and the aggregate of :func:`score_plan_file`."""

    rows: list[dict]
    summary: dict


def _error_row(token: str, reason: str) -> dict:
    row = {"token": token, "status": "error", "error": reason}
    row.update({c: 0.0 for c in SCORE_COLUMNS})
    row.update(progress_m=0.0, reference_progress_m=float("nan"), filtered="")
    return row


def score_plan_file(store, plans: Mapping[str, object], *, human_filter: bool = True, traffic: str = "log",
                    progress: bool = True) -> ScoreRun:
    """Score every plan against its scene in ``store`` (a :class:`~irlvla_gym.scenes.store.SceneStore`).

    EP is normalised with PDM-Closed (:class:`~irlvla_gym.planners.PDMClosedPlanner`, same traffic mode); the
    scorer's per-scene context is shared between PDM-Closed and the plan.
    """
    from irlvla_gym.metrics import score_plans
    from irlvla_gym.planners import PDMClosedConfig, PDMClosedPlanner

    pdm = PDMClosedPlanner(PDMClosedConfig(traffic=traffic), cache_size=16)
    rows: list[dict] = []
    items: Iterable = plans.items()
    if progress:
        from tqdm import tqdm

        items = tqdm(items, total=len(plans), desc="score", unit="plan", file=sys.stderr)
    for token, raw in items:
        plan, reason = check_plan(raw)
        if plan is None:
            rows.append(_error_row(token, reason))
            continue
        try:
            index = store.index_of(token)
        except KeyError:
            rows.append(_error_row(token, "token not in the scene store"))
            continue
        try:
            scene = store[index]
            ctx = pdm.context(scene)
            reference = pdm.run(scene, ctx).reference_progress
            result = score_plans(scene, plan, human_filter=human_filter, traffic=traffic,
                                 reference_progress=reference, context=ctx)
        except Exception as exc:  # noqa: BLE001 - one bad scene must not stop the run; it is reported per token
            rows.append(_error_row(token, f"scoring failed: {type(exc).__name__}: {exc}"))
            continue
        row = {"token": token, "status": "ok", "error": ""}
        row.update(result.take(0))
        row.update(progress_m=float(result.progress[0]), reference_progress_m=reference,
                   filtered=" ".join(result.filtered))
        rows.append(row)
    summary = summarise(rows)
    summary["settings"] = {"human_filter": human_filter, "traffic": traffic, "ep_normaliser": "pdm_closed"}
    return ScoreRun(rows, summary)


def summarise(rows: list[dict]) -> dict:
    """Mean of every score over all rows (errors count 0) and over the scored rows, with counts."""
    ok = [r for r in rows if r["status"] == "ok"]
    mean = {c: float(np.mean([r[c] for r in rows])) if rows else float("nan") for c in SCORE_COLUMNS}
    mean_ok = {c: float(np.mean([r[c] for r in ok])) if ok else float("nan") for c in SCORE_COLUMNS}
    return {"num_plans": len(rows), "num_scored": len(ok), "num_errors": len(rows) - len(ok),
            "mean": mean, "mean_scored_only": mean_ok}


def write_outputs(run: ScoreRun, out_dir: str | Path) -> dict[str, Path]:
    """Write ``scores.csv``, ``scores.json`` and ``summary.json`` atomically; returns their paths."""
    from irlvla_gym.evaluation.io import atomic_write_text

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a directory")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in run.rows:
        writer.writerow({k: (f"{row[k]:.6g}" if isinstance(row[k], float) else row[k]) for k in CSV_COLUMNS})
    paths = {"csv": out / "scores.csv", "json": out / "scores.json", "summary": out / "summary.json"}
    atomic_write_text(paths["csv"], buf.getvalue())
    atomic_write_text(paths["json"], json.dumps(_jsonable(run.rows), indent=1))
    atomic_write_text(paths["summary"], json.dumps(_jsonable(run.summary), indent=1))
    return paths


def _jsonable(obj):
    """NaN -> None so the JSON is standard."""
    if isinstance(obj, float):
        return None if not np.isfinite(obj) else obj
    if isinstance(obj, Mapping):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def format_summary(summary: dict) -> str:
    """Aggregate as two text lines: header and values (errors count 0)."""
    head = " ".join(f"{c.upper():>6}" for c in SCORE_COLUMNS)
    vals = " ".join(f"{summary['mean'][c]:6.3f}" for c in SCORE_COLUMNS)
    return (f"{summary['num_plans']} plans, {summary['num_scored']} scored, {summary['num_errors']} errors "
            f"(scored 0)\n{head}\n{vals}")


def register(subparsers) -> None:
    """Add ``irlvla score``."""
    p = subparsers.add_parser("score", help="score a plan file (json/npz: token -> 8x3 poses) against a scene store",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--scenes", type=Path, required=True, help="scene store directory")
    p.add_argument("--plans", type=Path, required=True, help=".json or .npz file: token -> 8x3 poses")
    p.add_argument("--out", type=Path, required=True, help="output directory (scores.csv, scores.json, summary.json)")
    p.add_argument("--no-filter", action="store_true", help="switch off NAVSIM v2's human false-positive filter")
    p.add_argument("--traffic", choices=("log", "idm"), default="log", help="agents: log replay or reactive IDM")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    from irlvla_gym.scenes.store import SceneStore

    store = SceneStore(args.scenes)
    plans = load_plans(args.plans)
    run = score_plan_file(store, plans, human_filter=not args.no_filter, traffic=args.traffic,
                          progress=not args.no_progress)
    write_outputs(run, args.out)
    print(format_summary(run.summary))
    for row in run.rows:
        if row["status"] != "ok":
            print(f"error: {row['token']}: {row['error']}", file=sys.stderr)
    print(json.dumps(_jsonable(run.summary)))
    return 0
