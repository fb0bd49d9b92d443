"""The evaluation protocol for learning claims: ``irlvla baselines compare`` (:func:`run_compare`).

A claim that a recipe learned something is a **paired per-scene difference against a named baseline agent**
(default ``bc_default``, the shipped stage-1 BC network), with **bootstrap 95 % CIs over scenes and seeds**
(:mod:`irlvla_gym.evaluation.paired`), on every evaluation set:

* ``synthetic-test``: the first ``--test-scenes`` scenes (default 500, the whole split), one-stage;
* ``synthetic-hard``: the first ``--hard-scenes`` scenes (default 500) in NAVSIM v2's two-stage pseudo-simulation;
  the per-scene score is the group score stage-1 EPDMS x weighted stage-2 EPDMS (its mean is the leaderboard's
  two-stage EPDMS);
* ``real``: every real window found under ``--data`` (default ``../shared/data``: the AV2 sensor logs and the
  nuScenes ScenarioNet sample, :func:`irlvla_gym.evaluation.real_data.iter_real_scenes`); skipped with a note when
  the folder is absent.

Rows: every finished run ``<out>/<variant>/seed<k>/`` (a ``done.json``; loaded with
:func:`baselines.evaluate.load_run_agent`; a variant's seeds form one row), and the reference agents (default
stand-still, constant-velocity, PDM-Closed, the logged human, ``bc_default``); stand-still and constant velocity are
always added. Scoring is the leaderboard's (:func:`irlvla_gym.leaderboard.run_leaderboard`: rule-based EPDMS, EP
relative to PDM-Closed, human filter on, log-replay traffic), so a row's mean equals ``irlvla leaderboard`` on the
same scenes. A failed plan scores 0 on its scene (the leaderboard's rule; counted in the tables).

**Resumable.** Each (agent or run, set) result is written atomically to ``<out>/eval/<set>/<name>.json``: per-scene
EPDMS, PDMS and sub-scores (two-stage: also stage-1 / stage-2 numbers), the scene tokens and the settings it was
computed with: the set, split, scene count (real: a digest of the window tokens), the leaderboard settings, the run's
weights and config SHA-256 (a shipped checkpoint's weights SHA-256), and ``scoring_code``, a digest of the code that
makes the scenes, observations and scores (``irlvla_gym/{metrics,sim,planners,scenes,obs,plans}`` and the
leaderboard). A rerun reuses a result only when all of these match and recomputes it otherwise (``--recompute``:
always). The code of a plug-in agent (entry point, ``module:attr``) is not fingerprinted: rerun with
``--recompute`` after changing it.

Output: ``<out>/paired.md`` (one table per set) and ``<out>/paired.json`` (the same numbers, the paired statistics
of every sub-score, the per-seed means and the settings).
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from irlvla_gym.configs import option

EVAL_SETS = ("synthetic-test", "synthetic-hard", "real")
"""The protocol's reporting sets (the default of ``--sets``)."""
TUNING_SETS = ("synthetic-val",)
"""Sets for choosing recipes (``--sets synthetic-val``): never in a reported table, so tuning leaves the reporting
sets held out."""
PROTOCOL_REFERENCES = ("stand-still", "constant-velocity", "pdm-closed", "human", "bc_default")
ALWAYS_REFERENCES = ("stand-still", "constant-velocity")
"""Rows present in every table, whatever ``--references`` says."""
TABLE_SUB_SCORES = ("nc", "dac", "ddc", "tlc", "ep", "ttc", "lk", "hc")
"""Sub-score columns of the markdown tables (EC is 1 in single-frame scoring and left out)."""
SCORING_CODE = ("metrics", "sim", "planners", "scenes", "obs", "plans", "leaderboard/runner.py",
                "leaderboard/two_stage.py", "leaderboard/report.py")
"""Paths under ``irlvla_gym/`` whose source digest is recorded with every result (editing them invalidates it)."""
RESULT_VERSION = 1
"""Bump when the result files' content or computation changes in a way the settings do not show."""


@dataclass
class CompareJob:
    """``irlvla baselines compare``: the evaluation protocol over finished runs and reference agents
    (:func:`run_compare`)."""

    out: str = "runs/baselines"
    """output root holding the runs (<out>/<variant>/seed<k>/); results go to <out>/eval, tables to <out>/paired.*"""
    variants: tuple[str, ...] = ()
    """variants (rows) to evaluate (default: every variant with a finished run under --out)"""
    seeds: tuple[int, ...] = ()
    """seeds to include (default: every finished seed)"""
    references: tuple[str, ...] = PROTOCOL_REFERENCES
    """reference agents (irlvla_gym.agents.load_agent specs); stand-still and constant-velocity are always added"""
    baseline: str = "bc_default"
    """the agent (a reference or a variant) every row is compared with"""
    sets: tuple[str, ...] = option(EVAL_SETS, choices=EVAL_SETS + TUNING_SETS)
    """evaluation sets (synthetic-val: the tuning set, first --val-scenes scenes, one-stage)"""
    test_scenes: int = 500
    """first N scenes of synthetic-test"""
    hard_scenes: int = 500
    """first N scenes of synthetic-hard (two-stage)"""
    val_scenes: int = 500
    """first N scenes of synthetic-val (the tuning set)"""
    data: str | None = None
    """folder of the real samples (default: ../shared/data)"""
    real_sources: tuple[str, ...] = option(("av2", "nuscenes"), choices=("av2", "nuscenes", "waymo", "av2-forecasting"))
    """sources of the real set (default: the fixed AV2 + nuScenes set of the published tables; waymo and
    av2-forecasting were never used for training or tuning: a held-out real set)"""
    resamples: int = 2000
    """bootstrap resamples"""
    bootstrap_seed: int = 0
    """seed of the bootstrap"""
    workers: int = 1
    """leaderboard worker processes"""
    recompute: bool = False
    """recompute every result instead of reusing those whose settings match"""
    figures: int = 0
    """the N worst scenes of every trained row per set drawn with its and the baseline's plans (PNGs under
    <out>/figures/<set>/, baselines/figures.py; 0: none)"""
    progress: bool = True
    """progress bars"""

    def __post_init__(self) -> None:
        for name in ("test_scenes", "hard_scenes", "val_scenes", "resamples", "workers"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if int(self.figures) < 0:
            raise ValueError(f"figures must be >= 0, got {self.figures}")
        unknown = [s for s in self.sets if s not in EVAL_SETS + TUNING_SETS]
        if unknown:
            raise ValueError(f"sets: unknown evaluation set(s) {unknown}; "
                             f"choose from {list(EVAL_SETS + TUNING_SETS)}")


# ---- what is evaluated ------------------------------------------------------------------------------------------


@dataclass
class Entrant:
    """One agent to evaluate: a reference agent (``spec``) or one seed of a finished run (``run_dir``).

    Attributes:
        row: table row (the reference spec or the variant). seed: the run seed (0 for references).
        key: file stem of its results and its agent name on the leaderboard (unique).
        identity: what its plans depend on besides the code (weights / config SHA-256).
    """

    row: str
    seed: int
    key: str
    spec: str | None = None
    run_dir: Path | None = None
    identity: dict[str, Any] | None = None

    def load(self) -> Any:
        """The agent, named :attr:`key`."""
        if self.run_dir is not None:
            from baselines.evaluate import load_run_agent

            return load_run_agent(self.run_dir, name=self.key)
        from irlvla_gym.agents import load_agent

        agent = load_agent(self.spec)
        agent.name = self.key
        return agent


def safe_name(text: str) -> str:
    """``text`` as a file stem: characters other than letters, digits, ``.``, ``_``, ``-`` become ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", text).strip(".") or "agent"


def find_runs(out: str | Path, variants: Sequence[str] = (), seeds: Sequence[int] = ()) -> dict[str, dict[int, Path]]:
    """Finished runs under ``out``: variant -> seed -> run directory (sorted), restricted to ``variants`` / ``seeds``
    when given. A run is a baselines run (a ``done.json``) or a finished ``irlvla bc --out <out>/<variant>/seed<k>``
    (policy ablations compare BC recipes the same way). Raises ValueError naming a requested variant without one."""
    from baselines.evaluate import is_finished_bc_run

    out = Path(out)
    found: dict[str, dict[int, Path]] = {}
    for vdir in sorted(p for p in out.iterdir() if p.is_dir()) if out.is_dir() else []:
        for sdir in sorted(vdir.glob("seed*")):
            if re.fullmatch(r"seed\d+", sdir.name) and ((sdir / "done.json").is_file() or is_finished_bc_run(sdir)):
                seed = int(sdir.name[4:])
                if not seeds or seed in seeds:
                    found.setdefault(vdir.name, {})[seed] = sdir
    if variants:
        missing = [v for v in variants if v not in found]
        if missing:
            raise ValueError(f"variants: no finished run (<out>/<variant>/seed<k>/done.json) of {missing} under {out}"
                             f" (found: {sorted(found) or 'none'})")
        found = {v: found[v] for v in variants}
    return found


def _sha256(path: Path) -> str | None:
    from irlvla_gym.agents import file_sha256

    return file_sha256(path) if path.is_file() else None


def run_identity(run_dir: Path) -> dict[str, Any]:
    """SHA-256 of a run's weights (``network/model.safetensors`` or ``model.zip``) and of its ``config.json``."""
    weights = run_dir / "network" / "model.safetensors"
    if not weights.is_file():
        weights = run_dir / "model.zip" if (run_dir / "model.zip").is_file() else run_dir / "model.safetensors"
    return {"weights": _sha256(weights), "config": _sha256(run_dir / "config.json")}


def reference_identity(spec: str) -> dict[str, Any]:
    """The spec, and the SHA-256 of the weights behind it (a shipped checkpoint or a model file), if any."""
    from irlvla_gym.agents import shipped_checkpoint

    checkpoint = shipped_checkpoint(spec)
    if checkpoint is not None:
        return {"spec": spec, "weights": _sha256(checkpoint / "model.safetensors"),
                "config": _sha256(checkpoint / "config.json")}
    path = Path(spec)
    return {"spec": spec, "weights": _sha256(path) if path.suffix == ".zip" else None}


def entrants(job: CompareJob) -> list[Entrant]:
    """References first (stand-still and constant velocity always), then every finished run, by variant and seed.
    Raises ValueError when ``job.baseline`` is none of the rows."""
    refs = list(dict.fromkeys(list(ALWAYS_REFERENCES) + list(job.references)))
    out = [Entrant(row=spec, seed=0, key=safe_name(spec), spec=spec, identity=reference_identity(spec))
           for spec in refs]
    runs = find_runs(job.out, job.variants, job.seeds)
    for variant, by_seed in runs.items():
        if variant in refs:
            raise ValueError(f"variant {variant!r} has the name of a reference agent; rename its folder")
        for seed, run_dir in by_seed.items():
            out.append(Entrant(row=variant, seed=seed, key=safe_name(f"{variant}-seed{seed}"), run_dir=run_dir,
                               identity=run_identity(run_dir)))
    if job.baseline not in {e.row for e in out}:
        raise ValueError(f"baseline {job.baseline!r} is neither a reference ({refs}) nor a variant with a finished "
                         f"run under {job.out} ({sorted(runs) or 'none'})")
    return out


# ---- evaluation sets --------------------------------------------------------------------------------------------


@dataclass
class EvalSet:
    """One evaluation set: the leaderboard's ``split`` (a label when ``scenes`` is given), the first ``num_scenes``
    (None: all), one- or two-stage; ``note`` says why it was skipped (then nothing is evaluated); ``clusters``: the
    log of each scene where scenes of one log are not independent (real windows), for the clustered bootstrap."""

    name: str
    split: str
    num_scenes: int | None
    two_stage: bool = False
    scenes: list | None = None
    description: str = ""
    scenes_digest: str | None = None
    note: str | None = None
    clusters: list[str] | None = None


def real_set(data: str | None, progress: bool = True, sources: Sequence[str] = ("av2", "nuscenes")) -> EvalSet:
    """Every window of ``sources`` under ``data`` (default ``../shared/data``), converted in memory; a skipped set
    with a note when none of the sample folders exists."""
    from irlvla_gym.evaluation.real_data import default_data_dir, iter_real_scenes

    data_dir = Path(data) if data else default_data_dir()
    # other sources are another set: their own results directory and table section, never the default set's
    name = "real" if tuple(sources) == ("av2", "nuscenes") else "real-" + "+".join(sources)
    skipped: list[str] = []
    try:
        pairs = iter_real_scenes(data_dir, sources=tuple(sources),
                                 on_skip=lambda source, item: skipped.append(f"{source}: {item}"))
        if progress:
            from tqdm import tqdm

            pairs = tqdm(pairs, desc="real windows", unit="scene", file=sys.stderr)
        pairs = list(pairs)
    except FileNotFoundError as exc:
        return EvalSet(name, "real", None, note=f"skipped: {exc}")
    if not pairs:
        return EvalSet(name, "real", None, note=f"skipped: no usable window under {data_dir}")
    counts: dict[str, int] = {}
    for source, _ in pairs:
        counts[source] = counts.get(source, 0) + 1
    tokens = "\n".join(scene.token for _, scene in pairs)
    text = ", ".join(f"{n} {s}" for s, n in counts.items())
    # windows cut from one drive, 0.5 s apart, share its traffic and map: the bootstrap draws logs, not windows
    logs = [f"{scene.metadata.source}:{scene.metadata.log_name or scene.token}" for _, scene in pairs]
    return EvalSet(name, "real", None, scenes=[scene for _, scene in pairs],
                   description=f"{len(pairs)} real windows ({text}) from {len(set(logs))} logs, one-stage"
                               + (f"; {len(skipped)} window(s) skipped by the converters" if skipped else ""),
                   scenes_digest=hashlib.sha256(tokens.encode()).hexdigest(), clusters=logs)


def eval_sets(job: CompareJob) -> list[EvalSet]:
    """The job's evaluation sets, in ``job.sets`` order."""
    out = []
    for name in job.sets:
        if name == "synthetic-test":
            out.append(EvalSet(name, "synthetic-test", job.test_scenes,
                               description=f"first {job.test_scenes} scenes, one-stage"))
        elif name == "synthetic-val":
            out.append(EvalSet(name, "synthetic-val", job.val_scenes,
                               description=f"first {job.val_scenes} scenes, one-stage; the tuning set"))
        elif name == "synthetic-hard":
            out.append(EvalSet(name, "synthetic-hard", job.hard_scenes, two_stage=True,
                               description=f"first {job.hard_scenes} scenes, two-stage pseudo-simulation; EPDMS = "
                                           "stage-1 x weighted stage-2 per scene, sub-scores of stage 1"))
        else:
            out.append(real_set(job.data, job.progress, job.real_sources))
    return out


# ---- results: compute, store, reuse -----------------------------------------------------------------------------


def scoring_code_digest() -> str:
    """Digest of the source files in :data:`SCORING_CODE`."""
    from irlvla_gym.envs.prepared import source_digest

    return source_digest(SCORING_CODE)


def result_settings(entrant: Entrant, eval_set: EvalSet, code: str) -> dict[str, Any]:
    """Everything a stored result must match to be reused (JSON values)."""
    from irlvla_gym.leaderboard import DEFAULT_PERTURBATIONS, LeaderboardConfig

    lb = LeaderboardConfig(agents=("human",))
    leaderboard = {"traffic": lb.traffic, "human_filter": lb.human_filter, "seed": lb.seed}
    if eval_set.two_stage:
        leaderboard["perturbations"] = [vars(p) for p in DEFAULT_PERTURBATIONS]
    settings = {"version": RESULT_VERSION, "set": eval_set.name, "split": eval_set.split,
                "num_scenes": eval_set.num_scenes, "two_stage": eval_set.two_stage,
                "scenes_digest": eval_set.scenes_digest, "leaderboard": leaderboard, "scoring_code": code,
                "agent": {"row": entrant.row, "seed": entrant.seed, **(entrant.identity or {})}}
    return json.loads(json.dumps(settings))


def result_path(out: str | Path, set_name: str, key: str) -> Path:
    return Path(out) / "eval" / set_name / f"{key}.json"


def read_result(path: Path, settings: Mapping[str, Any]) -> dict[str, Any] | None:
    """The stored result at ``path`` when its settings equal ``settings``; None when absent, unreadable or stale."""
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(stored, dict) or stored.get("settings") != settings:
        return None
    return stored


def agent_result(records: Sequence[Mapping[str, Any]], name: str, two_stage: bool) -> dict[str, Any]:
    """Per-scene numbers of agent ``name`` from leaderboard records: ``tokens``, ``scores`` (column -> list over
    scenes of EPDMS, PDMS, sub-scores; two-stage: ``epdms`` is the per-scene two-stage score and ``stage1_epdms``,
    ``stage2_epdms``, ``s2_*`` are added), failed plan calls and the first error messages."""
    from irlvla_gym.leaderboard.report import two_stage_scene_scores
    from irlvla_gym.leaderboard.runner import SCORE_NAMES

    scores: dict[str, list[float]] = {c: [] for c in SCORE_NAMES}
    messages: list[str] = []
    errors = 0
    for record in records:
        entry = record["agents"][name]
        for c in SCORE_NAMES:
            scores[c].append(float(entry["scores"][c]))
        if two_stage:
            per_scene = two_stage_scene_scores(entry)
            scores["epdms"][-1] = per_scene["epdms"]
            for c, value in per_scene.items():
                if c != "epdms":
                    scores.setdefault(c, []).append(value)
        for err in [entry["error"]] + [s["error"] for s in entry["stage2"]]:
            if err:
                errors += 1
                if len(messages) < 3:
                    messages.append(f"{record['token']}: {err}")
    return {"tokens": [r["token"] for r in records], "scores": scores, "errors": errors, "error_messages": messages}


def evaluate_set(eval_set: EvalSet, todo: Sequence[Entrant], job: CompareJob, code: str) -> dict[str, dict]:
    """Results of the entrants of one set: stored ones whose settings match are reused, the others computed in one
    leaderboard run (scenes and PDM-Closed references shared) and written; entrant key -> result."""
    results: dict[str, dict] = {}
    missing: list[tuple[Entrant, dict, Path]] = []
    for entrant in todo:
        settings = result_settings(entrant, eval_set, code)
        path = result_path(job.out, eval_set.name, entrant.key)
        stored = None if job.recompute else read_result(path, settings)
        if stored is not None:
            results[entrant.key] = stored
        else:
            missing.append((entrant, settings, path))
    print(f"[compare] {eval_set.name}: {len(results)} result(s) reused, {len(missing)} to evaluate", file=sys.stderr)
    if not missing:
        return results
    from baselines.common import write_json
    from irlvla_gym.leaderboard import LeaderboardConfig, run_leaderboard

    agents = [entrant.load() for entrant, _, _ in missing]
    run = run_leaderboard(LeaderboardConfig(
        split=eval_set.split, scenes=eval_set.scenes, agents=agents, num_scenes=eval_set.num_scenes,
        two_stage=eval_set.two_stage, workers=job.workers, progress=job.progress, out=None))
    for entrant, settings, path in missing:
        result = {"settings": settings, "agent": entrant.key, "row": entrant.row, "seed": entrant.seed,
                  **agent_result(run.records, entrant.key, eval_set.two_stage),
                  "leaderboard_wall_seconds": run.wall_seconds}
        write_json(path, result)
        results[entrant.key] = result
    return results


# ---- tables -----------------------------------------------------------------------------------------------------


def set_table(eval_set: EvalSet, ents: Sequence[Entrant], results: Mapping[str, dict],
              job: CompareJob) -> dict[str, Any]:
    """The paired statistics of one set: EPDMS and every sub-score of every row against ``job.baseline``, plus
    sub-score means (x100). Raises RuntimeError when results were computed on different scene lists."""
    import numpy as np

    from irlvla_gym.evaluation.paired import paired_comparison

    tokens = results[ents[0].key]["tokens"]
    for e in ents:
        if results[e.key]["tokens"] != tokens:
            raise RuntimeError(f"{result_path(job.out, eval_set.name, e.key)} was computed on other scenes than "
                               f"{result_path(job.out, eval_set.name, ents[0].key)}; rerun with --recompute")
    clusters = eval_set.clusters
    if clusters is not None and len(clusters) != len(tokens):
        raise RuntimeError(f"{eval_set.name}: {len(clusters)} logs for {len(tokens)} stored scenes; rerun with "
                           "--recompute")
    rows = list(dict.fromkeys(e.row for e in ents))
    columns = ["epdms"] + (["stage1_epdms"] if eval_set.two_stage else []) + ["pdms", *TABLE_SUB_SCORES]

    def by_row(column: str) -> dict[str, dict[int, np.ndarray]]:  # row -> seed -> (N,) scores of one column
        return {row: {e.seed: np.asarray(results[e.key]["scores"][column], np.float64) for e in ents if e.row == row}
                for row in rows}

    stats = {c: paired_comparison(by_row(c), job.baseline, resamples=job.resamples, seed=job.bootstrap_seed,
                                  clusters=clusters) for c in columns}
    return {"name": eval_set.name, "description": eval_set.description, "scenes": len(tokens),
            "epdms": stats["epdms"].to_dict(),
            "columns": {c: {r.agent: r.mean for r in stats[c].rows} for c in columns[1:]},
            "paired": {c: stats[c].to_dict() for c in columns[1:]},
            "errors": {row: sum(results[e.key]["errors"] for e in ents if e.row == row) for row in rows},
            "per_log": None if clusters is None else per_log_deltas(by_row("epdms"), job.baseline, clusters),
            "comparison": stats["epdms"]}


def per_log_deltas(scores: Mapping[str, Mapping[int, Any]], baseline: str,
                   logs: Sequence[str]) -> dict[str, dict[str, Any]]:
    """log -> {"scenes": n, "baseline": the baseline's mean EPDMS x100, "delta": row -> mean paired per-scene
    difference x100} from ``scores`` (row -> seed -> (N,) EPDMS; a failed plan, NaN, counts as 0 before each row's
    seed mean, as in the paired statistics)."""
    import numpy as np

    epdms = {row: np.mean([np.nan_to_num(np.asarray(v, np.float64)) for v in by_seed.values()], axis=0)
             for row, by_seed in scores.items()}
    owner = np.asarray(logs)
    base = epdms[baseline]
    out: dict[str, dict[str, Any]] = {}
    for log in dict.fromkeys(logs):
        m = owner == log
        out[log] = {"scenes": int(m.sum()), "baseline": float(100 * base[m].mean()),
                    "delta": {row: float(100 * (v[m] - base[m]).mean())
                              for row, v in epdms.items() if row != baseline}}
    return out


def per_log_markdown(per_log: Mapping[str, Mapping[str, Any]], baseline: str) -> list[str]:
    """Markdown lines: one row per log (windows, the baseline's EPDMS), one column per row's Δ."""
    names = list(next(iter(per_log.values()))["delta"])
    lines = ["Per log (Δ vs " + baseline + ", EPDMS x100; the windows of a log are one cluster of the bootstrap):", "",
             "| log | windows | " + baseline + " | " + " | ".join(names) + " |",
             "|---|---:|---:|" + "---:|" * len(names)]
    for log, entry in per_log.items():
        cells = [f"{entry['delta'][n]:+.1f}" for n in names]
        lines.append(f"| {log} | {entry['scenes']} | {entry['baseline']:.1f} | " + " | ".join(cells) + " |")
    return lines + [""]


def markdown(tables: Sequence[Mapping[str, Any]], skipped: Sequence[EvalSet], job: CompareJob) -> str:
    """``paired.md``: a header with the protocol, then one table per evaluation set (and the skipped sets)."""
    from irlvla_gym.evaluation.paired import markdown_table

    lines = [f"# Paired comparison against `{job.baseline}`", "",
             "EPDMS and sub-scores x100 (leaderboard protocol: rule-based scorer, EP relative to PDM-Closed, human "
             "filter on); a failed plan scores 0. `Δ` = mean paired per-scene difference to the baseline; 95% CIs "
             f"by hierarchical bootstrap over seeds and scenes ({job.resamples} resamples, seed "
             f"{job.bootstrap_seed}; real windows: over seeds and logs, the windows of one log drawn together); "
             "`better / worse` = share of scenes above / below the baseline by more than 0.1 points.", ""]
    for table in tables:
        extra = {c.upper() if c != "stage1_epdms" else "stage-1 EPDMS": v for c, v in table["columns"].items()}
        lines += [f"## {table['name']} ({table['description']})", "",
                  markdown_table(table["comparison"], extra=extra), ""]
        multi = [r for r in table["comparison"].rows if r.seeds > 1]
        if multi:
            lines += ["Per-seed EPDMS: " + "; ".join(
                f"{r.agent} " + " / ".join(f"{v:.1f}" for v in r.seed_means) for r in multi), ""]
        if table.get("per_log"):
            lines += per_log_markdown(table["per_log"], job.baseline)
        if table.get("figures"):
            lines += ["Worst scenes (figures): " + ", ".join(f"`{path}`" for path in table["figures"]), ""]
    for eval_set in skipped:
        lines += [f"## {eval_set.name}", "", eval_set.note or "skipped", ""]
    return "\n".join(lines)


def run_compare(job: CompareJob) -> dict[str, Path]:
    """Evaluate (or reuse) every entrant on every set, then write ``paired.md`` and ``paired.json``; returns their
    paths."""
    from baselines.common import write_json
    from irlvla_gym.utils import atomic_write

    t0 = time.perf_counter()
    ents = entrants(job)  # fails fast on a bad baseline / variant
    code = scoring_code_digest()
    tables, skipped = [], []
    for eval_set in eval_sets(job):
        if eval_set.note:
            print(f"[compare] {eval_set.name}: {eval_set.note}", file=sys.stderr)
            skipped.append(eval_set)
            continue
        results = evaluate_set(eval_set, ents, job, code)
        tables.append(set_table(eval_set, ents, results, job))
        if job.figures:
            from baselines.figures import render_worst

            paths = render_worst(eval_set, ents, results, job.baseline, job.figures, job.out)
            tables[-1]["figures"] = [str(path.relative_to(job.out)) for path in paths]
    out = Path(job.out)
    paths = {"md": out / "paired.md", "json": out / "paired.json"}
    with atomic_write(paths["md"], "w") as fh:
        fh.write(markdown(tables, skipped, job))
    document = {"baseline": job.baseline, "job": {k: (list(v) if isinstance(v, tuple) else v)
                                                  for k, v in vars(job).items()},
                "scoring_code": code, "wall_seconds": time.perf_counter() - t0,
                "sets": {t["name"]: {k: v for k, v in t.items() if k != "comparison"} for t in tables},
                "skipped": {s.name: s.note for s in skipped}}
    write_json(paths["json"], document)
    return paths


__all__ = ["ALWAYS_REFERENCES", "CompareJob", "EVAL_SETS", "Entrant", "EvalSet", "PROTOCOL_REFERENCES", "TUNING_SETS",
           "RESULT_VERSION", "SCORING_CODE", "TABLE_SUB_SCORES", "agent_result", "entrants", "eval_sets",
           "evaluate_set", "find_runs", "markdown", "per_log_deltas", "per_log_markdown", "read_result", "real_set",
           "reference_identity", "result_path", "result_settings", "run_compare", "run_identity", "safe_name",
           "scoring_code_digest", "set_table"]
