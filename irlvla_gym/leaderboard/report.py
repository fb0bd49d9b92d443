"""Leaderboard tables: per-agent summary rows from scene records, and the markdown / CSV / JSON files.

One-stage columns: ``agent, epdms, pdms, nc, dac, ddc, tlc, ep, ttc, lk, hc, ec`` (means over scenes; a scene where
the agent failed counts 0), ``scenes``, ``errors`` (failed plan calls), ``plan_s`` (seconds in observation building
and ``plan``, summed over workers).

Two-stage columns: ``epdms`` is the two-stage score (mean over groups of stage-1 x weighted stage-2,
:func:`~irlvla_gym.leaderboard.two_stage.aggregate_two_stage`); ``stage1_epdms`` and the plain sub-score columns are
stage-1 means; ``stage2_epdms`` and ``s2_<sub-score>`` are, per group, the weighted mean over its stage-2 scenes
(weights from the agent's own stage-1 endpoint), averaged over the groups that have stage-2 scenes;
``stage2_scenes`` counts the stage-2 scenes.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from irlvla_gym.leaderboard.two_stage import aggregate_two_stage, stage_two_weights
from irlvla_gym.metrics.config import SUB_SCORES

SCORE_COLUMNS = ("epdms", "pdms") + SUB_SCORES
ONE_STAGE_COLUMNS = ("agent",) + SCORE_COLUMNS + ("scenes", "errors", "plan_s")
TWO_STAGE_COLUMNS = (("agent", "epdms", "stage1_epdms", "stage2_epdms", "pdms") + SUB_SCORES
                     + tuple(f"s2_{n}" for n in SUB_SCORES) + ("scenes", "stage2_scenes", "errors", "plan_s"))
TWO_STAGE_TERMINAL_COLUMNS = ("agent", "epdms", "stage1_epdms", "stage2_epdms", "pdms", "scenes", "stage2_scenes",
                              "errors", "plan_s")
"""The two-stage columns printed to the terminal (:func:`terminal_table`); the files keep all of
:data:`TWO_STAGE_COLUMNS`."""
TIMING_COLUMNS = ("plan_s",)
"""Columns that vary from run to run (everything else is deterministic)."""


def summarise(records: Sequence[dict[str, Any]], names: Sequence[str], *, two_stage: bool = False,
              max_messages: int = 3) -> list[dict[str, Any]]:
    """One row per agent (in ``names`` order) from per-scene records; ``error_messages`` holds the first ones."""
    rows = []
    for name in names:
        entries = [r["agents"][name] for r in records]
        stage1 = {c: float(np.mean([e["scores"][c] for e in entries])) if entries else float("nan")
                  for c in SCORE_COLUMNS}
        messages: list[str] = []
        errors = 0
        for r, e in zip(records, entries):
            failures = [(r["token"], e["error"])] + [(s["token"], s["error"]) for s in e["stage2"]]
            for token, err in failures:
                if err:
                    errors += 1
                    if len(messages) < max_messages:
                        messages.append(f"{token}: {err}")
        row: dict[str, Any] = {"agent": name}
        if two_stage:
            row.update(_two_stage_numbers(entries))
            row["pdms"] = stage1["pdms"]
            row.update({n: stage1[n] for n in SUB_SCORES})
            row["stage2_scenes"] = sum(len(e["stage2"]) for e in entries)
        else:
            row.update(stage1)
        row.update(scenes=len(entries), errors=errors, plan_s=float(sum(e["plan_seconds"] for e in entries)),
                   error_messages=messages)
        rows.append(row)
    return rows


def _two_stage_numbers(entries: Sequence[dict[str, Any]]) -> dict[str, float]:
    stage1 = [e["scores"]["epdms"] for e in entries]
    endpoints = [np.asarray(e["endpoint"]) for e in entries]
    s2_scores = [[s["scores"]["epdms"] for s in e["stage2"]] for e in entries]
    s2_starts = [np.asarray([s["start"] for s in e["stage2"]], np.float64).reshape(-1, 2) for e in entries]
    out = {"epdms": aggregate_two_stage(stage1, endpoints, s2_scores, s2_starts),
           "stage1_epdms": float(np.mean(stage1)) if stage1 else float("nan")}
    weighted: dict[str, list[float]] = {c: [] for c in ("epdms",) + SUB_SCORES}
    for e, end, starts in zip(entries, endpoints, s2_starts):
        if not e["stage2"]:
            continue
        w = stage_two_weights(end, starts)
        for c in weighted:
            weighted[c].append(float(np.dot(w, [s["scores"][c] for s in e["stage2"]])))
    out["stage2_epdms"] = float(np.mean(weighted["epdms"])) if weighted["epdms"] else float("nan")
    out.update({f"s2_{n}": float(np.mean(weighted[n])) if weighted[n] else float("nan") for n in SUB_SCORES})
    return out


def two_stage_scene_scores(entry: dict[str, Any]) -> dict[str, float]:
    """Per-scene (per-group) two-stage numbers of one agent's record entry (:meth:`SceneEvaluator.evaluate`):
    ``epdms`` = stage-1 EPDMS x the weighted mean of its stage-2 EPDMS (stage 1 alone when the scene has no stage-2
    scenes), so the mean over scenes is the table's two-stage ``epdms``; ``stage1_epdms``; ``stage2_epdms`` and
    ``s2_<sub-score>`` (weighted stage-2 means, NaN without stage-2 scenes). Fractions in [0, 1]."""
    s1 = float(entry["scores"]["epdms"])
    out = {"epdms": s1, "stage1_epdms": s1, "stage2_epdms": float("nan")}
    out.update({f"s2_{n}": float("nan") for n in SUB_SCORES})
    if entry["stage2"]:
        starts = np.asarray([s["start"] for s in entry["stage2"]], np.float64).reshape(-1, 2)
        w = stage_two_weights(np.asarray(entry["endpoint"], np.float64), starts)
        for c in ("epdms",) + SUB_SCORES:
            out["stage2_epdms" if c == "epdms" else f"s2_{c}"] = float(
                np.dot(w, [s["scores"][c] for s in entry["stage2"]]))
        out["epdms"] = s1 * out["stage2_epdms"]
    return out


def columns(two_stage: bool) -> tuple[str, ...]:
    return TWO_STAGE_COLUMNS if two_stage else ONE_STAGE_COLUMNS


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if not np.isfinite(value) else f"{value:.3f}"
    return str(value)


def markdown_table(rows: Sequence[dict[str, Any]], two_stage: bool = False, scale: float = 100.0,
                   cols: Sequence[str] | None = None) -> str:
    """A markdown table; score columns in percent (``scale`` = 100) like NAVSIM's tables, seconds as they are.
    ``cols``: a subset of the columns (default all of :func:`columns`)."""
    cols = tuple(cols) if cols is not None else columns(two_stage)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" if c == "agent" else "---:" for c in cols) + "|"]
    for row in rows:
        cells = []
        for c in cols:
            v = row[c]
            if c in ("scenes", "stage2_scenes", "errors", "agent"):
                cells.append(str(v))
            elif c == "plan_s":
                cells.append(f"{v:.1f}")
            else:
                cells.append("nan" if not np.isfinite(v) else f"{v * scale:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def terminal_table(rows: Sequence[dict[str, Any]], two_stage: bool = False) -> str:
    """The table ``irlvla leaderboard`` prints: every one-stage column; two-stage, the compact
    :data:`TWO_STAGE_TERMINAL_COLUMNS` (the stage-1 and stage-2 sub-scores are in the written files)."""
    if not two_stage:
        return markdown_table(rows)
    return (markdown_table(rows, True, cols=TWO_STAGE_TERMINAL_COLUMNS)
            + "\n(epdms = two-stage score; sub-scores of both stages in leaderboard.md / .csv / .json)")


def markdown_report(result: Any) -> str:
    """The whole leaderboard.md: settings line, table, errors."""
    cfg = result.config
    mode = "two-stage pseudo-simulation" if cfg.two_stage else "one-stage"
    n = len(result.records)
    head = [f"# Leaderboard: {cfg.split}, {n} scenes, {mode}", "",
            f"EPDMS and sub-scores in percent; EP normalised by PDM-Closed, human filter "
            f"{'on' if cfg.human_filter else 'off'}, traffic {cfg.traffic}; backend {cfg.backend}, "
            f"{cfg.workers} worker(s), seed {cfg.seed}; wall time {result.wall_seconds:.1f} s.", ""]
    if cfg.two_stage:
        head += ["`epdms` = two-stage score (mean over groups of stage-1 x weighted stage-2); `stage1_*`/plain "
                 "sub-scores: stage 1; `stage2_epdms`/`s2_*`: weighted stage 2.", ""]
    body = [markdown_table(result.rows, cfg.two_stage)]
    scene_errors = [f"- {r['token'] or r['index']}: {r['scene_error']}" for r in result.records if r["scene_error"]]
    errs = [f"- **{row['agent']}**: {row['errors']} failed plan call(s); first: " + " | ".join(row["error_messages"])
            for row in result.rows if row["errors"]]
    tail = []
    if errs:
        tail += ["", "## Agent errors (those scenes score 0)", ""] + errs
    if scene_errors:
        tail += ["", "## Scenes that could not be prepared (0 for every agent)", ""] + scene_errors
    return "\n".join(head + body + tail) + "\n"


def csv_text(rows: Sequence[dict[str, Any]], two_stage: bool = False) -> str:
    """CSV of the summary rows (full precision, fractions not percent)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns(two_stage)), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in row.items()})
    return buf.getvalue()


def config_dict(config: Any) -> dict[str, Any]:
    """A :class:`~irlvla_gym.leaderboard.runner.LeaderboardConfig` as JSON-friendly values (agent instances by name)."""
    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.name == "agents":
            value = [a if isinstance(a, str) else str(getattr(a, "name", type(a).__name__)) for a in value]
        elif f.name == "scenes" and value is not None and not isinstance(value, (str, os.PathLike)):
            value = str(getattr(value, "path", None) or getattr(value, "name", None) or f"{len(value)} scenes")
        elif f.name == "perturbations":
            value = [dataclasses.asdict(p) for p in value]
        elif isinstance(value, os.PathLike):
            value = str(value)
        out[f.name] = value
    return out


def json_document(result: Any) -> dict[str, Any]:
    return {"config": config_dict(result.config), "wall_seconds": result.wall_seconds,
            "columns": list(columns(result.config.two_stage)), "rows": list(result.rows),
            "scenes": list(result.records)}


def write_outputs(result: Any, out_dir: Path) -> dict[str, Path]:
    """Write leaderboard.md, leaderboard.csv and leaderboard.json into ``out_dir`` (atomically)."""
    from irlvla_gym.utils import atomic_write

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"md": out_dir / "leaderboard.md", "csv": out_dir / "leaderboard.csv",
             "json": out_dir / "leaderboard.json"}
    with atomic_write(paths["md"], "w") as fh:
        fh.write(markdown_report(result))
    with atomic_write(paths["csv"], "w") as fh:
        fh.write(csv_text(result.rows, result.config.two_stage))
    with atomic_write(paths["json"], "w") as fh:
        json.dump(json_document(result), fh, indent=1, allow_nan=True)
    return paths


__all__ = [
    "ONE_STAGE_COLUMNS", "TIMING_COLUMNS", "TWO_STAGE_COLUMNS", "TWO_STAGE_TERMINAL_COLUMNS", "columns", "csv_text",
    "json_document", "markdown_report", "markdown_table", "summarise", "terminal_table", "two_stage_scene_scores",
    "write_outputs",
]
