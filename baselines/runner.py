"""Runs: one variant x seed (:func:`train_run`), and the whole experiment (:func:`run_all`).

Output layout (``--out``, default ``runs/baselines``)::

    <out>/<variant>/seed<k>/config.json      the resolved config (+ seed); a rerun with another config refuses
                           /checkpoint/      last checkpoint (resume: the same command continues from here)
                           /curve.csv        training reward per rollout
                           /tb/              TensorBoard logs
                           /network/         the trained VLA network (VLA variants) | model.zip (+ sidecar)
                           /eval.json        leaderboard row on the evaluation split
                           /done.json        timing + eval row; its presence makes a rerun skip this run
    <out>/references.json                    constant velocity, PDM-Closed, human, BC alone (evaluated once)
    <out>/baselines.md|.csv|.json            the table; <out>/learning_curves.png
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Sequence

from baselines.common import read_json, run_dir_of, write_json
from baselines.config import VARIANTS, RunConfig, load_config


def _check_config(run_dir: Path, values: dict[str, Any]) -> None:
    path = run_dir / "config.json"
    if path.is_file():
        old = read_json(path)
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
    _check_config(run_dir, values)

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

    if evaluate:
        from baselines.evaluate import evaluate_agents, load_run_agent

        t = time.perf_counter()
        agent = trained_agent if trained_agent is not None else load_run_agent(run_dir)
        rows = evaluate_agents([agent], cfg.eval.get("split", "synthetic-test"), cfg.eval.get("num_scenes", 100),
                               progress=progress)
        metrics["eval"] = rows[agent.name]
        metrics["eval_s"] = time.perf_counter() - t
        write_json(run_dir / "eval.json", metrics["eval"])
    write_json(run_dir / "done.json", metrics)
    print(f"[baselines] {cfg.variant} seed {seed}: {steps} steps in {metrics['wall_s']:.0f} s "
          f"({metrics['ms_per_step']:.1f} ms/step, env {metrics['env_ms_per_step']:.2f} ms/step)"
          + (f", EPDMS {metrics['eval']['epdms']:.4f}" if evaluate else ""))
    return metrics


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
    refs = evaluate_references(out, first.eval.get("split", "synthetic-test"), first.eval.get("num_scenes", 100),
                               first.env.get("obs_config"), progress)
    command = {"preset": preset, "variants": list(variants), "seeds": list(seeds), "overrides": list(overrides)}
    return write_report(out, variants, seeds, refs, command)


__all__ = ["evaluate_references", "run_all", "run_dir_of", "train_run"]
