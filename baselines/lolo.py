"""``irlvla baselines lolo``: RL on real drives, evaluated leave-one-log-out.

::

    irlvla baselines lolo --variants ppo-vla-epdms ppo-vla-rwm --preset paper --seeds 0 --out runs/lolo

The windows of the protocol's real set (``irlvla baselines compare``'s ``real``: every window of the AV2 and nuScenes
samples under ``--data``) are grouped by drive (log). For each drive, every variant is trained on the windows of all
the other drives (a fold store ``<out>/folds/no-<log>``; run ``<out>/<variant>-no-<log>/seed<k>``), then each window
is scored by the run that never trained on its drive. The pooled rows are compared with ``--baseline`` like every
protocol table: paired per-window differences, 95 % bootstrap CIs over seeds and drives (the windows of a drive drawn
together), and the per-drive table. Every fold run is also evaluated on all windows (its training drives included),
stored under ``<out>/eval/real/`` as ``compare`` does, so a rerun reuses finished runs and results.

Why: the compare tables train on synthetic scenes only. This asks whether RL on real drives (a reward on real
windows) carries to a drive it never saw, which is how IRL-VLA is trained in the paper (NAVSIM's real logs), at the
scale of the real data this checkout has.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from baselines.config import PRESETS, Overrides
from irlvla_gym.configs import option


@dataclass
class LoloJob:
    """``irlvla baselines lolo``: leave-one-log-out RL on the real windows (:func:`run_lolo`)."""

    variants: tuple[str, ...] = ("ppo-vla-epdms", "ppo-vla-rwm")
    """configs to train per fold (baselines/configs/<name>.yaml or a yaml path)"""
    preset: str = option("paper", choices=PRESETS)
    """budget preset of the configs"""
    seeds: tuple[int, ...] = (0,)
    """run seeds"""
    out: str = "runs/lolo"
    """output root: fold stores, runs, results, lolo.md / lolo.json"""
    folds: tuple[str, ...] = ()
    """drives to hold out, by fold name (``av2-3bffdcff``) or drive label (default: every drive); the table then
    scores the windows of these drives only (e.g. a reward model that saw some drives can be tested on the others)"""
    baseline: str = "bc_default"
    """the agent every pooled row is compared with"""
    references: tuple[str, ...] = ("pdm-closed", "human", "bc_default")
    """reference rows besides stand-still and constant-velocity (evaluated on every window)"""
    data: str | None = None
    """folder of the real samples (default: ../shared/data)"""
    overrides: Overrides = field(default_factory=Overrides)
    resamples: int = 2000
    """bootstrap resamples"""
    workers: int = 1
    """leaderboard worker processes"""
    progress: bool = True
    """progress bars"""


def fold_name(log: str) -> str:
    """A directory-safe short name of a drive label ``source:log`` (``av2-3bffdcff``, ``scenarionet-scene-0103``)."""
    from baselines.protocol import safe_name

    source, _, log_name = log.partition(":")
    short = log_name[:8] if len(log_name) == 36 and log_name.count("-") == 4 else log_name  # a UUID: its prefix
    return safe_name(f"{source}-{short}")


def fold_names(logs: Sequence[str]) -> dict[str, str]:
    """fold name -> drive label for every drive of ``logs`` (sorted); two drives whose short names collide keep their
    full labels (safe-named), so no fold ever holds out two drives."""
    from baselines.protocol import safe_name

    drives = sorted(set(logs))
    short = [fold_name(log) for log in drives]
    names = [n if short.count(n) == 1 else safe_name(log) for n, log in zip(short, drives)]
    return dict(zip(names, drives))


def build_fold_store(scenes: Sequence[Any], out_dir: Path, fold: str, progress: bool) -> int:
    """The store of ``scenes`` at ``out_dir`` (reused when it holds exactly their tokens, rebuilt otherwise);
    returns the scene count."""
    from irlvla_gym.scenes.store import SceneStore, build_store

    tokens = [s.token for s in scenes]
    if (out_dir / "manifest.json").is_file():
        try:
            if [str(t) for t in SceneStore(out_dir).tokens.tolist()] == tokens:
                return len(tokens)
        except ValueError:
            pass  # damaged: rebuilt below
        shutil.rmtree(out_dir)
    build_store(iter(scenes), out_dir, split=f"lolo-no-{fold}", source="real", progress=progress)
    return len(tokens)


def fold_overrides(job: LoloJob, variant: str, store: Path, n: int) -> Overrides:
    """The job's overrides plus the fold's training scenes: ``env.split`` = the fold store, ``env.num_scenes`` = all
    ``n`` of its windows, and ``distill.num_scenes`` = ``n`` too where the variant distils (a reward-greedy recipe
    picks its teacher's plans on the training scenes)."""
    from baselines.config import load_config

    sets = list(job.overrides.sets) + [f"env.split={store.resolve()}", f"env.num_scenes={n}"]
    base = Overrides(sets=sets, unsets=list(job.overrides.unsets), timesteps=job.overrides.timesteps,
                     n_envs=job.overrides.n_envs)
    if load_config(variant, job.preset, base.as_list()).distill.epochs > 0:
        base.sets.append(f"distill.num_scenes={n}")
    return base


def train_folds(job: LoloJob, scenes: Sequence[Any], logs: Sequence[str]) -> dict[str, str]:
    """Train every variant x seed on every fold (finished runs are skipped, interrupted ones resume); returns
    fold -> the drive label it holds out."""
    from baselines.config import load_config
    from baselines.runner import TrainJob, run_train_job

    folds = fold_names(logs)
    if len(folds) < 2:
        raise ValueError(f"the real set has {len(folds)} drive(s): leave-one-log-out needs at least 2")
    if job.folds:
        unknown = [f for f in job.folds if f not in folds and f not in folds.values()]
        if unknown:
            raise ValueError(f"--folds {unknown}: not a drive of the real set (folds: {list(folds)})")
        folds = {f: log for f, log in folds.items() if f in job.folds or log in job.folds}
    for variant in job.variants:  # a bad name or override fails here, not after the first folds have trained
        load_config(variant, job.preset, job.overrides.as_list())
    for fold, held_out in folds.items():
        keep = [s for s, log in zip(scenes, logs) if log != held_out]
        store = Path(job.out) / "folds" / f"no-{fold}"
        n = build_fold_store(keep, store, fold, job.progress)
        for variant in job.variants:
            name = f"{Path(variant).stem}-no-{fold}"
            overrides = fold_overrides(job, variant, store, n)
            for seed in job.seeds:
                print(f"[lolo] {name} seed {seed}: {n} windows of {len(set(logs)) - 1} drives", file=sys.stderr)
                run_train_job(TrainJob(variant=name, config=variant, seed=seed, evaluate=False, preset=job.preset,
                                       out=job.out, overrides=overrides, progress=job.progress))
    return folds


def pooled_scores(results: Mapping[str, dict], ents: Sequence[Any], variants: Sequence[str],
                  folds: Mapping[str, str], logs: Sequence[str]) -> dict[str, dict[int, Any]]:
    """row -> seed -> (N,) EPDMS: references as evaluated, each variant's windows scored by its fold that held out
    their drive (NaN = a failed plan, as the protocol)."""
    import numpy as np

    out: dict[str, dict[int, Any]] = {}
    fold_rows = {f"{Path(v).stem}-no-{fold}": (Path(v).stem, held_out) for v in variants
                 for fold, held_out in folds.items()}
    logs_arr = np.asarray(logs)
    for e in ents:
        epdms = np.asarray(results[e.key]["scores"]["epdms"], np.float64)
        if e.row not in fold_rows:
            out.setdefault(e.row, {})[e.seed] = epdms
            continue
        variant, held_out = fold_rows[e.row]
        row = out.setdefault(f"{variant} (held-out drive)", {}).setdefault(e.seed, np.full(len(logs), np.nan))
        row[logs_arr == held_out] = epdms[logs_arr == held_out]
    return out


def lolo_command(job: LoloJob) -> str:
    """The ``irlvla baselines lolo`` command line of ``job`` (what changes the numbers: variants, preset, seeds,
    folds, overrides, baseline)."""
    parts = ["irlvla baselines lolo --variants", *job.variants, "--preset", job.preset, "--seeds",
             *map(str, job.seeds)]
    if job.folds:
        parts += ["--folds", *job.folds]
    if job.baseline != "bc_default":
        parts += ["--baseline", job.baseline]
    parts += [a for key in job.overrides.unsets for a in ("--unset", key)]
    parts += [a for item in job.overrides.sets for a in ("--set", item)]
    for flag, value in (("--timesteps", job.overrides.timesteps), ("--n-envs", job.overrides.n_envs)):
        if value is not None:
            parts += [flag, str(value)]
    return " ".join(parts)


def lolo_markdown(comparison: Any, per_log: Mapping[str, Any], baseline: str, description: str, job: LoloJob) -> str:
    """``lolo.md``: the pooled table and the per-drive table."""
    from baselines.protocol import per_log_markdown

    lines = [f"# Leave-one-log-out RL on the real windows against `{baseline}`", "",
             f"{description}. Each trained row is trained on the windows of the other drives and scores only the "
             f"windows of the drive it never saw (`{lolo_command(job)}`). EPDMS x100; `Δ` = mean paired "
             f"per-window difference; 95% CIs by bootstrap over seeds and drives ({job.resamples} resamples).", "",
             "| agent | seeds | windows | EPDMS [95% CI] | Δ vs " + baseline + " [95% CI] | better / worse |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in comparison.rows:
        delta = "(baseline)" if r.agent == baseline else \
            f"{r.delta:+.1f} [{r.delta_ci[0]:+.1f}, {r.delta_ci[1]:+.1f}]"
        lines.append(f"| {r.agent} | {r.seeds} | {r.scenes} | {r.mean:.1f} [{r.mean_ci[0]:.1f}, {r.mean_ci[1]:.1f}]"
                     f" | {delta} | {r.improved:.0%} / {r.worsened:.0%} |")
    lines += ["", "Per drive (Δ vs " + baseline + ", EPDMS x100; a trained row's column is the fold that held the "
              "drive out):", ""]
    return "\n".join(lines + per_log_markdown(per_log, baseline)[2:]) + "\n"


def run_lolo(job: LoloJob) -> dict[str, Path]:
    """Build the folds, train, evaluate, pool; writes ``<out>/lolo.md`` and ``lolo.json`` and returns their paths."""
    import numpy as np

    from baselines.common import write_json
    from baselines.protocol import CompareJob, entrants, evaluate_set, per_log_deltas, real_set, scoring_code_digest
    from irlvla_gym.evaluation.paired import paired_comparison
    from irlvla_gym.utils import atomic_write

    if job.overrides.num_scenes is not None or job.overrides.eval_scenes is not None:
        raise ValueError("--num-scenes / --eval-scenes: a fold trains on all the windows of its drives and is "
                         "evaluated on the real set; drop these flags")
    if job.baseline not in job.references:
        raise ValueError(f"--baseline {job.baseline!r} must be one of --references {list(job.references)}")
    eval_set = real_set(job.data, job.progress)
    if eval_set.note:
        raise FileNotFoundError(f"no real windows to train and evaluate on ({eval_set.note})")
    logs = list(eval_set.clusters or [])
    folds = train_folds(job, eval_set.scenes, logs)
    rows = tuple(f"{Path(v).stem}-no-{fold}" for v in job.variants for fold in folds)
    compare = CompareJob(out=job.out, variants=rows, seeds=job.seeds, references=job.references,
                         baseline=job.baseline, sets=("real",), workers=job.workers, progress=job.progress)
    ents = entrants(compare)
    results = evaluate_set(eval_set, ents, compare, scoring_code_digest())
    scores = pooled_scores(results, ents, job.variants, folds, logs)
    keep = np.isin(np.asarray(logs), list(folds.values()))  # --folds: only the held-out drives' windows
    scores = {row: {seed: v[keep] for seed, v in by_seed.items()} for row, by_seed in scores.items()}
    logs = [log for log, k in zip(logs, keep) if k]
    comparison = paired_comparison(scores, job.baseline, resamples=job.resamples, clusters=logs)
    per_log = per_log_deltas(scores, job.baseline, logs)
    description = eval_set.description + (f"; the {int(keep.sum())} windows of the {len(folds)} held-out drive(s) "
                                          f"{sorted(folds)} scored" if not keep.all() else "")
    out = Path(job.out)
    paths = {"md": out / "lolo.md", "json": out / "lolo.json"}
    with atomic_write(paths["md"], "w") as fh:
        fh.write(lolo_markdown(comparison, per_log, job.baseline, description, job))
    write_json(paths["json"], {"baseline": job.baseline, "folds": folds, "set": description,
                               "epdms": comparison.to_dict(), "per_log": per_log})
    return paths


__all__ = ["LoloJob", "build_fold_store", "fold_name", "fold_names", "fold_overrides", "lolo_command",
           "lolo_markdown", "pooled_scores", "run_lolo", "train_folds"]
