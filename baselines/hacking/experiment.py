"""The reward-hacking experiment: ppo-vla-rwm with each remedy off and on, gap curves, one table.

``irlvla hacking run --preset quick --out runs/hacking`` (:func:`run_experiment` of a
:class:`baselines.hacking.config.HackingConfig`; the presets' budgets are :data:`baselines.hacking.config.PRESETS`):

1. the RWM dataset for the ensemble members and for refitting (``--rwm-data DIR``, or built into
   ``OUT/rwm_data`` from the first ``rwm_data_scenes`` synthetic-train scenes, the scenes PPO trains on);
2. the ensemble (``OUT/ensemble``, built once: :func:`reward_models.ensemble.build_ensemble`);
3. per remedy in ``none, ensemble, refit, anchor`` and seed: :func:`train_remedy` = the ``ppo-vla-rwm`` baseline
   (``baselines/configs/ppo-vla-rwm.yaml`` with the preset's overrides: the VLA from ``bc_default``, SB3 PPO on the
   learned reward, same env) with the hacking probe (:class:`baselines.hacking.probe.RewardHackingProbe`) every
   ``probe_every`` env steps, the remedy switched on, then the leaderboard evaluation (rule-based scorer) of the
   final policy on the first ``eval_scenes`` synthetic-test scenes;
4. ``OUT/hacking.md|.csv|.json`` (the table) and ``OUT/gap_curves.png`` (every remedy's curves).

Each run writes ``OUT/<remedy>/seed<k>/``: ``tb/`` (TensorBoard, ``hacking/*`` and ``refit/*`` scalars),
``hacking_probe.csv|json|png``, ``network/`` (the trained VLA), ``done.json`` (metrics; a rerun skips the run).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback, CallbackList

from baselines.common import read_json, seed_everything, write_json
from baselines.config import RunConfig, load_config
from baselines.hacking.config import PRESETS, HackingConfig, budget
from baselines.hacking.probe import ProbeSet, RewardHackingProbe, most_gamed
from baselines.hacking.remedies import RelabelRefitCallback, RemedyConfig, make_anchor
from irlvla_gym.rewards import parse_reward


class _Progress(BaseCallback):
    """A tqdm bar over env steps; logs ``rollout/reward_mean``, the mean training reward (the learned reward of the
    sampled plans on the training scenes) of each rollout."""

    def __init__(self, total: int, desc: str, enabled: bool = True):
        super().__init__()
        self.total, self.desc, self.enabled, self.bar = total, desc, enabled, None
        self.rewards: list[tuple[int, float]] = []  # (env step, mean training reward of the rollout)

    def _on_training_start(self) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=self.total, desc=self.desc, unit="step", disable=not self.enabled, mininterval=5)

    def _on_step(self) -> bool:
        self.bar.update(self.training_env.num_envs)
        return True

    def _on_rollout_end(self) -> None:
        mean = float(np.mean(self.model.rollout_buffer.rewards))
        self.rewards.append((int(self.model.num_timesteps), mean))
        self.logger.record("rollout/reward_mean", mean)

    def _on_training_end(self) -> None:
        self.bar.close()


def train_remedy(name: str, cfg: RunConfig, remedy: RemedyConfig, seed: int, run_dir: str | Path, probe: ProbeSet,
                 probe_every: int, base_data: Any = None, ensemble_dir: str | Path | None = None,
                 eval_split: str = "synthetic-test", eval_scenes: int | None = 50,
                 progress: bool = True) -> dict[str, Any]:
    """Train ppo-vla-rwm (``cfg``) with ``remedy``, probing the reward gap; evaluate; write ``done.json``.

    Args:
        name: the row name (``none``, ``ensemble``, ...). cfg: the baseline run config (learned reward).
        remedy: which remedies are on. seed: run seed. run_dir: output directory.
        probe: the fixed probe set. probe_every: env steps between probe measurements.
        base_data: the RWM dataset (:class:`reward_models.dataset.RWMData`) the refit aggregates into.
        ensemble_dir: the saved ensemble (remedy ``ensemble``).
        eval_split / eval_scenes: leaderboard evaluation of the final policy.
    Returns:
        the ``done.json`` content.
    """
    from baselines.anchor import PPOWithAnchor
    from baselines.envs import make_sb3_vec_env
    from baselines.evaluate import VLANetworkAgent, evaluate_agents
    from baselines.pretrain import resolve_pretrained
    from irlvla_gym.policies import VLAPolicy

    run_dir = Path(run_dir)
    if (run_dir / "done.json").is_file():
        print(f"[hacking] {name} seed {seed}: finished earlier, skipped ({run_dir})")
        return read_json(run_dir / "done.json")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "config.json", {"remedy": name, "seed": seed, "run": cfg.to_dict(),
                                         "remedies": dataclasses.asdict(remedy), "probe_every": probe_every})
    seed_everything(seed)
    shipped, rwm, reward = _remedy_reward(cfg, remedy, ensemble_dir)
    venv, vec_kind = make_sb3_vec_env(cfg, reward)

    # ---- PPO on the VLA from its BC checkpoint (ppo-vla-rwm), with the anchor when switched on ------------------------
    policy_kwargs = {"pretrained_path": resolve_pretrained(cfg.pretrained or "bc_default"), **cfg.policy_kwargs}
    model = PPOWithAnchor(VLAPolicy, venv, seed=seed, device="cpu", verbose=0, tensorboard_log=str(run_dir / "tb"),
                          policy_kwargs=policy_kwargs, **cfg.ppo.kwargs())
    if remedy.anchor:  # frozen copy taken now = the stage-1 policy
        model.anchor = make_anchor(remedy.anchor_kind, model.policy, cfg.env, remedy.anchor_weight,
                                   remedy.anchor_batch, seed=seed)

    # ---- callbacks: probe (first: it measures the reward the last updates used), refit, progress ------------------
    probe_cb = RewardHackingProbe(probe, probe_every, reward_model=rwm,
                                  reference_model=shipped if (remedy.ensemble or remedy.refit) else None,
                                  obs_keys=tuple(cfg.env.get("obs_keys", ())), log_dir=run_dir,
                                  title=f"hacking probe: ppo-vla-rwm, remedy {name}, seed {seed}")
    refit_cb = _refit_callback(cfg, remedy, rwm, reward, base_data, seed) if remedy.refit else None
    progress_cb = _Progress(cfg.total_timesteps, f"hacking {name} s{seed}", progress)
    callbacks = [cb for cb in (probe_cb, refit_cb, progress_cb) if cb is not None]

    # ---- learn ------------------------------------------------------------------------------------------------------
    t0 = time.perf_counter()
    model.learn(cfg.total_timesteps, callback=CallbackList(callbacks), tb_log_name="ppo")
    wall = time.perf_counter() - t0
    model.policy.network.save_pretrained(run_dir / "network")
    if refit_cb is not None:
        refit_cb.data.save(run_dir / "relabelled_plans.npz")

    # ---- final files: evaluation with the rule-based scorer, probe summary, refit cost ------------------------------
    t1 = time.perf_counter()
    agent = VLANetworkAgent(model.policy.network, f"{name}/s{seed}", cfg.env.get("obs_config"))
    row = evaluate_agents([agent], eval_split, eval_scenes, progress=progress)[agent.name]
    first, last = probe_cb.history[0], probe_cb.history[-1]
    gamed, gamed_gap = most_gamed(last)
    metrics: dict[str, Any] = {
        "remedy": name, "seed": seed, "steps": int(model.num_timesteps), "wall_s": wall,
        "env_s": float(venv.env_seconds), "vec_env": vec_kind, "eval_s": time.perf_counter() - t1, "eval": row,
        "probe_first": first, "probe_last": last, "most_gamed": gamed, "most_gamed_gap": gamed_gap,
        "train_reward": progress_cb.rewards,
    }
    if refit_cb is not None:
        metrics["refit"] = _refit_summary(refit_cb, wall)
    venv.close()
    write_json(run_dir / "done.json", metrics)
    print(f"[hacking] {name} seed {seed}: {metrics['steps']} steps in {wall:.0f} s; probe gap "
          f"{first['gap']:+.3f} -> {last['gap']:+.3f}; synthetic-test EPDMS {row['epdms']:.4f}")
    return metrics


def _remedy_reward(cfg: RunConfig, remedy: RemedyConfig, ensemble_dir: str | Path | None) -> tuple[Any, Any, Any]:
    """(the frozen reference model for the probe's ref_* scalars, the run's reward model, the env reward): a private
    copy of the run's RWM (refit changes it in place), or the ensemble."""
    from reward_models import DEFAULT_CHECKPOINT, RewardWorldModel
    from reward_models.ensemble import EnsembleRewardModel, ModelRewardFn

    spec = parse_reward(cfg.reward)
    if spec.name != "rwm":
        raise ValueError(f"the hacking experiment needs the reward world model (reward: rwm | rwm:<dir>), got "
                         f"{spec}")
    checkpoint = DEFAULT_CHECKPOINT if spec.argument is None else Path(spec.argument)
    shipped = RewardWorldModel.from_pretrained(checkpoint)
    if remedy.ensemble:
        rwm: Any = EnsembleRewardModel.from_pretrained(ensemble_dir, beta=remedy.ensemble_beta)
    else:
        rwm = RewardWorldModel.from_pretrained(checkpoint)
    return shipped, rwm, ModelRewardFn(rwm, cache_size=cfg.rwm_cache_size)


def _refit_callback(cfg: RunConfig, remedy: RemedyConfig, rwm: Any, reward: Any, base_data: Any,
                    seed: int) -> RelabelRefitCallback:
    """Relabel-and-refit over the run's training scenes."""
    from irlvla_gym.scenes.source import SceneSource
    from reward_models.refit import RefitConfig, Refitter, Relabeller

    source = SceneSource(cfg.env.get("scenes"), cfg.env.get("split", "synthetic-train"), cfg.env.get("num_scenes"))
    refitter = Refitter(rwm, base_data, RefitConfig(steps=remedy.refit_steps, lr=remedy.refit_lr, seed=seed))
    return RelabelRefitCallback(reward, refitter, Relabeller(source.load), remedy.refit_every, remedy.refit_max_plans,
                                seed=seed)


def _refit_summary(refit_cb: RelabelRefitCallback, wall: float) -> dict[str, Any]:
    """Cost of the refits of one run (seconds total / per refit / share of the wall time) and their history."""
    n = len(refit_cb.history)
    return {"refits": n, "seconds_total": refit_cb.seconds, "seconds_per_refit": refit_cb.seconds / n if n else 0.0,
            "fraction_of_wall": refit_cb.seconds / wall, "plans_added": len(refit_cb.data),
            "history": refit_cb.history}


def ensure_rwm_data(out: Path, rwm_data: str | None, num_scenes: int, workers: int, progress: bool) -> Path:
    """The RWM dataset directory: ``rwm_data`` when given, else ``out/rwm_data`` (built or resumed)."""
    if rwm_data:
        return Path(rwm_data)
    from reward_models.dataset import build_dataset

    path = out / "rwm_data"
    build_dataset("synthetic-train", path, num_scenes=num_scenes, workers=workers, progress=progress)
    return path


def run_experiment(cfg: HackingConfig) -> dict[str, Path]:
    """Steps 1-4 of the module docs; returns the written report files."""
    from reward_models.dataset import load_dataset
    from reward_models.ensemble import build_ensemble

    p = cfg.budget
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    base_run = load_config("ppo-vla-rwm", p.run_preset, [p.run, *cfg.overrides])
    if not base_run.learned_reward:
        raise ValueError("the hacking experiment needs a learned reward (reward: rwm | rwm:<dir>)")
    t0 = time.perf_counter()

    # ---- 1. data, 2. ensemble ---------------------------------------------------------------------------------------
    data = None
    timings: dict[str, float] = {}
    if any(r in ("ensemble", "refit") for r in cfg.remedies):
        t = time.perf_counter()
        data_dir = ensure_rwm_data(out, cfg.rwm_data, cfg.rwm_data_scenes or p.rwm_data_scenes, cfg.workers,
                                   cfg.progress)
        data = load_dataset(data_dir, max_scenes=cfg.rwm_data_scenes)
        timings["rwm_data_s"] = time.perf_counter() - t
    ens_dir = out / "ensemble"
    if "ensemble" in cfg.remedies and not (ens_dir / "ensemble.json").is_file():
        rp = p.remedy
        ens, summary = build_ensemble(data, members=rp["ensemble_members"], beta=rp["ensemble_beta"],
                                      epochs=rp["ensemble_epochs"], seed=0, progress=cfg.progress)
        ens.save_pretrained(ens_dir, extra={"summary": summary, "data": str(data.manifest.get("source")),
                                            "data_scenes": len(data)})
        timings["ensemble_s"] = summary["seconds"]
        print(f"[hacking] ensemble of {len(ens)} members built in {summary['seconds']:.0f} s -> {ens_dir}")

    # ---- 3. runs ------------------------------------------------------------------------------------------------------
    probe = ProbeSet.from_split(p.probe_split, p.probe_scenes, tuple(base_run.env.get("obs_keys", ())),
                                base_run.env.get("obs_config"))
    results: dict[str, list[dict[str, Any]]] = {}
    for name in cfg.remedies:
        remedy = RemedyConfig.for_remedy(name, **p.remedy)
        for seed in cfg.seeds:
            results.setdefault(name, []).append(train_remedy(
                name, base_run, remedy, seed, out / name / f"seed{seed}", probe, p.probe_every, data, ens_dir,
                p.eval_split, p.eval_scenes, cfg.progress))

    # ---- 4. report ----------------------------------------------------------------------------------------------------
    from baselines.hacking.report import write_report

    bc_row = evaluate_bc(out, p.eval_split, p.eval_scenes, base_run, cfg.progress)
    command = {"preset": cfg.preset, "remedies": list(cfg.remedies), "seeds": list(cfg.seeds),
               "overrides": list(cfg.overrides), "rwm_data": cfg.rwm_data, "total_s": time.perf_counter() - t0,
               **timings}
    return write_report(out, results, bc_row, command, probe_scenes=len(probe))


def evaluate_bc(out: Path, split: str, num_scenes: int | None, cfg: RunConfig, progress: bool) -> dict[str, Any]:
    """The stage-1 policy (``bc_default``) on the same evaluation scenes (cached in ``out/bc_eval.json``)."""
    from baselines.evaluate import VLANetworkAgent, evaluate_agents
    from baselines.pretrain import resolve_pretrained

    path = out / "bc_eval.json"
    if path.is_file():
        cached = read_json(path)
        if cached.get("split") == split and cached.get("num_scenes") == num_scenes:
            return cached["row"]
    agent = VLANetworkAgent(resolve_pretrained(cfg.pretrained or "bc_default"), "bc", cfg.env.get("obs_config"))
    row = evaluate_agents([agent], split, num_scenes, progress=progress)["bc"]
    write_json(path, {"split": split, "num_scenes": num_scenes, "row": row})
    return row


def preset_overrides(preset: str) -> dict[str, Any]:
    """The ppo-vla-rwm run overrides of a preset (for tests and docs)."""
    return dict(budget(preset).run)


__all__ = ["PRESETS", "ensure_rwm_data", "evaluate_bc", "preset_overrides", "run_experiment",
           "train_remedy"]
