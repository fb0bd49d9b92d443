"""``irlvla score``: score a file of plans against scenes (NAVSIM v2 EPDMS, EP normalised by PDM-Closed).

``--scenes``: a synthetic split name (``synthetic-test``, ...: its cached store if built, else the scenes generated on
the fly, as everywhere in the project) or a scene-store directory (``irlvla scenes build``).

Input plans: a ``.json`` object ``{token: [[x, y, yaw] x 8], ...}`` (optionally wrapped as ``{"plans": {...}}``) or
an ``.npz`` whose keys are tokens with (8, 3) arrays (or the pair of arrays ``tokens`` (N,) and ``plans``
(N, 8, 3)). Poses are at t = 0.5 .. 4 s in the scene's t0 ego frame (rear axle, x forward, y left; m, rad).

Making a plans file: ``--write-plans AGENT`` writes the plans of any leaderboard agent spec (``constant-velocity``,
``bc_default``, a trained model's ``model.zip``, ``pkg.mod:MyAgent``) for the first ``--num-scenes`` scenes to
``--plans`` (JSON, the format above) and scores nothing; edit or replace them, then score::

    irlvla score --scenes synthetic-test --write-plans constant-velocity --num-scenes 20 --plans plans.json
    irlvla score --scenes synthetic-test --plans plans.json --out scores/

Output (``--out DIR``, every file written atomically):

* ``scores.csv`` / ``scores.json``: one row per token: ``token, status, error, epdms, pdms, nc, dac, ddc, tlc, ep,
  ttc, lk, hc, ec, progress_m, reference_progress_m, filtered``. A plan that cannot be scored (token not in the
  scenes, wrong shape, NaN/inf, a jump faster than 50 m/s between consecutive poses, a scene that fails to load)
  gets ``status = "error"``, the reason in ``error`` and 0 for every score; the run goes on.
* ``summary.json``: the aggregate (mean EPDMS, PDMS and each sub-score over all tokens, errors counting 0; the same
  over the scored tokens only), counts and settings.

The terminal gets a short table of the means (:func:`format_summary`), the first few errors and the files written.
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
from irlvla_gym.plans.files import check_plan, load_plans

SCORE_COLUMNS = ("epdms", "pdms") + SUB_SCORES
CSV_COLUMNS = ("token", "status", "error") + SCORE_COLUMNS + ("progress_m", "reference_progress_m", "filtered")


# --------------------------------------------------------------------------------------------------------------------
# Reading and checking plans
# --------------------------------------------------------------------------------------------------------------------


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
    """Score every plan against its scene in ``store`` (a :class:`~irlvla_gym.scenes.source.SceneSource`, e.g. of a
    split name, or a :class:`~irlvla_gym.scenes.store.SceneStore`).

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
            rows.append(_error_row(token, f"token not in the scenes ({getattr(store, 'name', None) or store.path})"))
            continue
        try:
            scene = store.load(index) if hasattr(store, "load") else store[index]
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


MAX_ERRORS_SHOWN = 5
"""Per-token errors printed to stderr (all of them are in scores.csv)."""


def format_summary(summary: dict) -> str:
    """The aggregate as a short table: a counts line, then the means over all plans (a plan that could not be scored
    counts 0) and, when some could not, over the scored plans only."""
    n, ok, bad = summary["num_plans"], summary["num_scored"], summary["num_errors"]
    lines = [f"{n} plans: {ok} scored, {bad} could not be scored" + (" (they count 0 in 'all plans')" if bad else "")]
    lines.append(f"{'':<12}" + " ".join(f"{c.upper():>6}" for c in SCORE_COLUMNS))
    rows = [("all plans", summary["mean"])] + ([("scored only", summary["mean_scored_only"])] if bad else [])
    for label, means in rows:
        lines.append(f"{label:<12}" + " ".join(f"{means[c]:6.3f}" for c in SCORE_COLUMNS))
    return "\n".join(lines)


def open_scenes(spec: str | Path):
    """The scenes of ``--scenes``: a synthetic split name or a scene-store directory
    (:class:`~irlvla_gym.scenes.source.SceneSource`); ValueError naming the argument otherwise."""
    from irlvla_gym.scenes.source import SceneSource
    from irlvla_gym.scenes.synthetic import SPLITS

    text = str(spec)
    if not Path(text).is_dir() and text not in SPLITS:
        hint = f"; did you mean --scenes {Path(text).name}?" if Path(text).name in SPLITS else ""
        raise ValueError(f"--scenes {text}: neither a scene-store directory nor a synthetic split "
                         f"({', '.join(SPLITS)}){hint}")
    return SceneSource(text)


def write_agent_plans(agent_spec: str, scenes: str | Path, path: str | Path, num_scenes: int | None = 20,
                      trust_pickle: bool = False, progress: bool = True) -> int:
    """Write the plans of an agent (any :func:`~irlvla_gym.agents.load_agent` spec) for the first ``num_scenes``
    scenes of ``scenes`` (None: all) to the plans file ``path`` (``.json``: token -> 8x3 poses, or ``.npz``:
    ``tokens`` + ``plans``); returns the number of plans."""
    from irlvla_gym.agents import check_plan as agent_plan, load_agent
    from irlvla_gym.evaluation.io import atomic_write_text
    from irlvla_gym.obs.registry import ObservationBuilder

    path = Path(path)
    if path.suffix.lower() not in (".json", ".npz"):
        raise ValueError(f"--plans {path}: plans must be a .json or .npz file")
    source = open_scenes(scenes)
    agent = load_agent(agent_spec, trust_pickle=trust_pickle)
    builder = ObservationBuilder(agent.obs_keys, getattr(agent, "obs_config", None)) if agent.obs_keys else None
    count = len(source) if num_scenes is None else min(int(num_scenes), len(source))
    indices: Iterable[int] = range(count)
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc=f"plans of {agent.name}", unit="scene", file=sys.stderr)
    plans: dict[str, list] = {}
    for i in indices:
        scene = source.load(i)
        obs = builder.observe(scene) if builder is not None else {}
        plans[scene.token] = agent_plan(agent.plan(obs, scene)).tolist()
    if path.suffix.lower() == ".npz":
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, tokens=np.array(list(plans)), plans=np.array(list(plans.values())))
    else:
        atomic_write_text(path, json.dumps(plans, indent=1))
    return len(plans)


def register(subparsers) -> None:
    """Add ``irlvla score``."""
    p = subparsers.add_parser("score", help="score a plan file (json/npz: token -> 8x3 poses) against scenes",
                              description=__doc__.split("\n\n")[0],
                              epilog="example: irlvla score --scenes synthetic-test --write-plans constant-velocity "
                                     "--plans plans.json && irlvla score --scenes synthetic-test --plans plans.json "
                                     "--out scores/")
    p.add_argument("--scenes", required=True,
                   help="synthetic split name (e.g. synthetic-test) or scene-store directory")
    p.add_argument("--plans", type=Path, required=True, help=".json or .npz file: token -> 8x3 poses")
    p.add_argument("--out", type=Path, default=None,
                   help="output directory (scores.csv, scores.json, summary.json); required unless --write-plans")
    p.add_argument("--write-plans", metavar="AGENT", default=None,
                   help="instead of scoring: write AGENT's plans (any leaderboard agent spec, e.g. "
                        "constant-velocity) for the first --num-scenes scenes to --plans")
    p.add_argument("--num-scenes", type=int, default=20, help="scenes of --write-plans (0: all; default 20)")
    p.add_argument("--trust-pickle", action="store_true",
                   help="--write-plans with an SB3 model .zip agent: allow SB3's load, which unpickles the zip (runs "
                        "any code stored in it; only for files you trust like code)")
    p.add_argument("--no-filter", action="store_true", help="switch off NAVSIM v2's human false-positive filter")
    p.add_argument("--traffic", choices=("log", "idm"), default="log", help="agents: log replay or reactive IDM")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    if args.write_plans is not None:
        if args.num_scenes < 0:
            raise ValueError(f"--num-scenes must be >= 0 (0: all), got {args.num_scenes}")
        n = write_agent_plans(args.write_plans, args.scenes, args.plans, args.num_scenes or None,
                              trust_pickle=args.trust_pickle, progress=not args.no_progress)
        print(f"wrote {n} plans of {args.write_plans} to {args.plans}; score them with: irlvla score --scenes "
              f"{args.scenes} --plans {args.plans} --out scores/")
        return 0
    if args.out is None:
        raise ValueError("--out is required: the output directory of scores.csv, scores.json and summary.json")
    source = open_scenes(args.scenes)
    plans = load_plans(args.plans)
    run = score_plan_file(source, plans, human_filter=not args.no_filter, traffic=args.traffic,
                          progress=not args.no_progress)
    paths = write_outputs(run, args.out)
    print(format_summary(run.summary))
    errors = [row for row in run.rows if row["status"] != "ok"]
    for row in errors[:MAX_ERRORS_SHOWN]:
        print(f"error: {row['token']}: {row['error']}", file=sys.stderr)
    if len(errors) > MAX_ERRORS_SHOWN:
        print(f"... and {len(errors) - MAX_ERRORS_SHOWN} more errors (status/error columns of {paths['csv']})",
              file=sys.stderr)
    print("written: " + ", ".join(str(p) for p in paths.values()))
    return 0
