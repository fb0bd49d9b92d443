"""Runs: one variant x seed (:func:`train_run`), and the whole experiment (:func:`run_all`).

Output layout (``--out``, default ``runs/baselines``)::

    <out>/<variant>/seed<k>/config.json      the resolved config (+ seed); a rerun with another config refuses
                           /checkpoint/      last checkpoint (resume: the same command continues from here)
                           /curve.csv        per rollout: training reward, rule-based EPDMS + sub-scores, reward gap
                                             (plug-ins too; baselines.callbacks)
                           /tb/              TensorBoard: SB3 scalars + rollout/subscore_*, rollout/epdms, rollout/reward_gap
                           /network/         the trained VLA network (VLA variants) | model.zip (+ sidecar)
                           /eval.json        leaderboard row on the evaluation split
                           /done.json        timing + eval row; its presence makes a rerun skip this run
    <out>/references.json                    constant velocity, PDM-Closed, human, BC alone (evaluated once)
    <out>/baselines.md|.csv|.json            the table; <out>/learning_curves.png
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from baselines.common import read_json, run_dir_of, write_json
from baselines.config import PRESETS, VARIANTS, Overrides, RunConfig, load_config
from irlvla_gym.configs import option

# ---- the commands' configs (each field is a flag of ``irlvla baselines <action>``) -----------------------------------


@dataclass
class TrainJob:
    """``irlvla baselines train``: one variant x one seed (:func:`run_train_job`)."""

    variant: str = option(positional=True, help=f"one of {list(VARIANTS)} (or any name, with --config)")
    config: str | None = None
    """yaml config (default baselines/configs/<variant>.yaml)"""
    seed: int = 0
    """run seed"""
    evaluate: bool = option(True, flag="--eval")
    """evaluate the trained policy (rule-based scorer, the config's eval section)"""
    preset: str = option("quick", choices=PRESETS)
    """budget preset of the config files"""
    out: str = "runs/baselines"
    """output root"""
    overrides: Overrides = field(default_factory=Overrides)
    restart: bool = False
    """start runs over instead of skipping / resuming"""
    progress: bool = True
    """progress bars"""

    def run_config(self) -> RunConfig:
        """The resolved config: the yaml, its preset, then the overrides; named after ``variant``."""
        cfg = load_config(self.config or self.variant, self.preset, self.overrides.as_list())
        if self.config and cfg.variant != self.variant:
            cfg.variant = self.variant
        return cfg


@dataclass
class SweepJob:
    """``irlvla baselines run``: every variant x seed, the references, the table (:func:`run_sweep`)."""

    preset: str = option("quick", choices=PRESETS)
    """budget preset of the config files"""
    out: str = "runs/baselines"
    """output root"""
    overrides: Overrides = field(default_factory=Overrides)
    restart: bool = False
    """start runs over instead of skipping / resuming"""
    progress: bool = True
    """progress bars"""
    variants: tuple[str, ...] = option(VARIANTS, choices=VARIANTS)
    """variants to train and evaluate"""
    seeds: tuple[int, ...] = (0, 1)
    """seeds of every variant"""


@dataclass
class TableJob:
    """``irlvla baselines table``: (re)write the table and curves from finished runs (:func:`write_table`)."""

    out: str = "runs/baselines"
    """output root"""
    variants: tuple[str, ...] = VARIANTS
    """variants (rows) of the table"""
    seeds: tuple[int, ...] = (0, 1)
    """seeds of every variant"""


def run_train_job(job: TrainJob) -> dict[str, Any]:
    """Train (+ evaluate) one variant x seed: :func:`train_run` of the job's resolved config."""
    return train_run(job.run_config(), job.seed, job.out, job.progress, evaluate=job.evaluate, restart=job.restart)


def run_sweep(job: SweepJob) -> dict[str, Path]:
    """:func:`run_all` of the job; returns the written files."""
    return run_all(job.preset, job.variants, job.seeds, job.out, job.overrides.as_list(), job.progress, job.restart)


def write_table(job: TableJob) -> dict[str, Path]:
    """The table and curves of the finished runs under ``job.out`` (the references when they were evaluated)."""
    from baselines.report import write_report

    refs_path = Path(job.out) / "references.json"
    refs = read_json(refs_path)["rows"] if refs_path.is_file() else {}
    return write_report(job.out, list(job.variants), list(job.seeds), refs)


# ---- runs -----------------------------------------------------------------------------------------------------------


def _normalised(values: dict[str, Any]) -> dict[str, Any]:
    """A config.json as the current :class:`RunConfig` writes it, as JSON reads it back: files of older versions
    (sparse ``ppo`` / ``bc`` / ``eval`` sections) compare equal to the same settings written now."""
    try:
        values = {**RunConfig.from_dict({k: v for k, v in values.items() if k != "seed"}).to_dict(),
                  "seed": values.get("seed")}
    except (TypeError, ValueError):
        pass  # not a config this version can read: compared as it is (and found different)
    return json.loads(json.dumps(values, default=str))


def check_config(run_dir: Path, values: dict[str, Any]) -> None:
    """Write ``values`` (a run's config + seed) to ``run_dir/config.json``, or, when that file exists, refuse a
    different config (ValueError naming the keys that differ)."""
    path = run_dir / "config.json"
    if path.is_file():
        old, values = _normalised(read_json(path)), _normalised(values)
        if old != values:
            diff = sorted(k for k in set(old) | set(values) if old.get(k) != values.get(k))
            raise ValueError(f"{run_dir} holds a run with a different config (keys {diff}); use --restart to start "
                             f"it over or another --out")
    else:
        write_json(path, values)


def train_run(cfg: RunConfig, seed: int, out: str | Path, progress: bool = True, evaluate: bool = True,
              restart: bool = False) -> dict[str, Any]:
    """Train, evaluate and record one variant x seed. A finished run (``done.json``) is skipped; an interrupted
    one resumes from its last checkpoint. Returns the ``done.json`` content."""
    run_dir = run_dir_of(out, cfg.variant, seed)
    if restart and run_dir.exists():
        shutil.rmtree(run_dir)
    if (run_dir / "done.json").is_file():
        print(f"[baselines] {cfg.variant} seed {seed}: finished earlier, skipped ({run_dir})")
        return read_json(run_dir / "done.json")
    run_dir.mkdir(parents=True, exist_ok=True)
    values = {**cfg.to_dict(), "seed": int(seed)}
    check_config(run_dir, values)

    prepare_training_scenes(cfg, progress)
    distill_s = 0.0
    if cfg.distill.epochs > 0:  # RL starts from the reward-greedy distilled policy (baselines.distill)
        from baselines.distill import distilled_policy

        t = time.perf_counter()
        cfg = dataclasses.replace(cfg, pretrained=distilled_policy(cfg, seed, run_dir, progress))
        distill_s = time.perf_counter() - t  # of this call (a resumed run's earlier part is in distill/timing.json)
    trained_agent = None
    if cfg.algorithm == "dppo":
        from baselines.dppo import train_dppo

        metrics = train_dppo(cfg, seed, run_dir, progress)
    elif cfg.algorithm == "plugin":
        from baselines.plugin import train_plugin

        metrics, trained_agent = train_plugin(cfg, seed, run_dir)
    else:
        from baselines.sb3_ppo import train_ppo

        metrics = train_ppo(cfg, seed, run_dir, progress)
    steps = max(int(metrics["steps"]), 1)
    metrics.update(ms_per_step=1e3 * metrics["wall_s"] / steps, env_ms_per_step=1e3 * metrics["env_s"] / steps,
                   update_ms_per_step=1e3 * (metrics["wall_s"] - metrics["env_s"]) / steps,
                   wall_s_per_100k_steps=1e5 * metrics["wall_s"] / steps)
    if cfg.distill.epochs > 0:
        from baselines.distill import distill_seconds

        metrics["distill_s"] = distill_seconds(run_dir, distill_s)

    if evaluate:
        from baselines.evaluate import evaluate_agents, load_run_agent

        t = time.perf_counter()
        agent = trained_agent if trained_agent is not None else load_run_agent(run_dir)
        rows = evaluate_agents([agent], cfg.eval.split, cfg.eval.num_scenes, progress=progress)
        metrics["eval"] = rows[agent.name]
        metrics["eval_s"] = time.perf_counter() - t
        write_json(run_dir / "eval.json", metrics["eval"])
    write_json(run_dir / "done.json", metrics)
    print(f"[baselines] {cfg.variant} seed {seed}: {steps} steps in {metrics['wall_s']:.0f} s "
          f"({metrics['ms_per_step']:.1f} ms/step, env {metrics['env_ms_per_step']:.2f} ms/step)"
          + (f", EPDMS {metrics['eval']['epdms']:.4f}" if evaluate else ""))
    return metrics


def prepare_training_scenes(cfg: RunConfig, progress: bool = True) -> None:
    """Build a store of the training pool once (:func:`irlvla_gym.envs.prepared.ensure_split_store`): the split's
    default store and its prepared caches when the pool is larger than the envs' scene cache (without it such a run
    regenerates and re-prepares scenes on every revisit: env steps ~17 ms instead of ~1 ms at the paper preset), the
    pool's own store when it fits (from 64 scenes: later runs read the envs' persisted preparation of its scenes
    instead of making them again)."""
    from irlvla_gym.envs.prepared import ensure_split_store

    env = dict(cfg.env)
    scenes = env.get("scenes") or env.get("split", "synthetic-train")
    ensure_split_store(scenes, env.get("num_scenes"), progress=progress, scene_cache_size=env.get("scene_cache_size"))


def evaluate_references(out: str | Path, split: str, num_scenes: int | None, obs_config: Any = None,
                        progress: bool = True) -> dict[str, dict[str, Any]]:
    """The reference rows (cached in ``<out>/references.json`` per split and scene count)."""
    from baselines.evaluate import evaluate_agents, reference_agents

    path = Path(out) / "references.json"
    if path.is_file():
        cached = read_json(path)
        if cached.get("split") == split and cached.get("num_scenes") == num_scenes:
            return cached["rows"]
    rows = evaluate_agents(reference_agents(obs_config), split, num_scenes, progress)
    write_json(path, {"split": split, "num_scenes": num_scenes, "rows": rows})
    return rows


def run_all(preset: str = "quick", variants: Sequence[str] = VARIANTS, seeds: Sequence[int] = (0, 1),
            out: str | Path = "runs/baselines", overrides: Sequence[str] = (), progress: bool = True,
            restart: bool = False) -> dict[str, Path]:
    """Train + evaluate every variant x seed (skipping finished runs), evaluate the references, write the table and
    the learning curves. Returns the written files."""
    from baselines.report import write_report

    out = Path(out)
    configs = {v: load_config(v, preset, overrides) for v in variants}  # fail fast on a bad config
    for variant in variants:
        for seed in seeds:
            train_run(configs[variant], seed, out, progress, restart=restart)
    first = configs[variants[0]]
    refs = evaluate_references(out, first.eval.split, first.eval.num_scenes, first.env.get("obs_config"), progress)
    command = {"preset": preset, "variants": list(variants), "seeds": list(seeds), "overrides": list(overrides)}
    return write_report(out, variants, seeds, refs, command)


__all__ = ["SweepJob", "TableJob", "TrainJob", "check_config", "evaluate_references", "run_all", "run_dir_of",
           "run_sweep", "run_train_job", "train_run", "write_table"]
