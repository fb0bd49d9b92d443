"""Training of the SB3 PPO variants (``ppo-cnn-epdms``, ``ppo-vla-epdms``, ``ppo-vla-rwm``, ``ppo-vla-rwm-bc``).

Reads top to bottom: env -> model (new, or loaded from the run's last checkpoint) -> anchor -> callbacks ->
``learn`` -> final files. What differs between the four variants is only configuration:

================  ====================================  ===========  ====================
variant           policy                                reward       extra loss
================  ====================================  ===========  ====================
ppo-cnn-epdms     MultiInputPolicy (bev + ego), scratch  epdms        -
ppo-vla-epdms     VLAPolicy from bc_default              epdms        -
ppo-vla-rwm       VLAPolicy from bc_default              rwm          -
ppo-vla-rwm-bc    VLAPolicy from bc_default              rwm          BC on expert plans
================  ====================================  ===========  ====================

Files in ``run_dir``: ``checkpoint/model.zip`` + ``checkpoint/state.json`` (resume), ``curve.csv``, ``tb/``,
``model.zip`` (+ ``model.irlvla.json``: the env settings and row name; for VLA policies it names ``network/``,
``VLANetwork.from_pretrained``), so ``irlvla leaderboard --agents <run_dir>/model.zip`` evaluates the trained
policy (``--trust-pickle`` for the CNN policy's zip; a VLA run's zip loads through ``network/``).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np

from baselines.anchor import PPOWithAnchor, make_anchor
from baselines.common import read_json, seed_everything, write_json
from baselines.config import ENV_ID, RunConfig
from baselines.envs import env_kwargs, make_reward, make_sb3_vec_env, policy_mean_actions, self_critical_wrapper
from baselines.hooks import CurveWriter, HookRunner, PolicySnapshot, RunCallback, load_hooks
from irlvla_gym.agents import UntrustedInputError, file_sha256, pickle_trusted


def build_model(cfg: RunConfig, venv: Any, seed: int, tensorboard_log: str | None = None) -> PPOWithAnchor:
    """A new (untrained) PPO model of a run on ``venv``: ``VLAPolicy`` from the run's pretrained checkpoint, or
    SB3's ``MultiInputPolicy``; the config's ``ppo`` settings and ``policy_kwargs``. CPU, no anchor."""
    if cfg.policy == "vla":
        from baselines.pretrain import resolve_pretrained
        from irlvla_gym.policies import VLAPolicy

        policy: Any = VLAPolicy
        policy_kwargs = {"pretrained_path": resolve_pretrained(cfg.pretrained or "bc_default"), **cfg.policy_kwargs}
    else:
        policy, policy_kwargs = "MultiInputPolicy", dict(cfg.policy_kwargs)
    return PPOWithAnchor(policy, venv, seed=seed, device="cpu", verbose=0, tensorboard_log=tensorboard_log,
                         policy_kwargs=policy_kwargs, **cfg.ppo.kwargs())


def pretrained_reference(cfg: RunConfig, model: PPOWithAnchor) -> Any:
    """A frozen copy of the run's policy with the *pretrained* weights (also after a resume): the reference of the
    complement anchor."""
    from baselines.anchor import frozen_copy
    from baselines.pretrain import resolve_pretrained

    if cfg.policy != "vla":
        raise ValueError(f"bc.kind {cfg.bc.kind!r} needs policy 'vla' (the pretrained VLA is the reference)")
    reference = frozen_copy(model.policy)
    reference.load_pretrained(resolve_pretrained(cfg.pretrained or "bc_default"))
    return reference


def trusted_checkpoint(ckpt_dir: Path, state: dict[str, Any]) -> Path:
    """``ckpt_dir/model.zip`` if it may be unpickled: its SHA-256 equals the one this run recorded in state.json when
    saving it, or the user trusts pickles (``--trust-pickle`` / ``IRLVLA_TRUST_PICKLE=1``); else
    :class:`~irlvla_gym.agents.UntrustedInputError` naming the file and the flag."""
    path = ckpt_dir / "model.zip"
    if state.get("zip_sha256") == file_sha256(path) or pickle_trusted():
        return path
    raise UntrustedInputError(f"{path}: this checkpoint was not written by this run (no matching zip_sha256 in "
                              f"{ckpt_dir / 'state.json'}); resuming unpickles it, which can run code. Pass "
                              "--trust-pickle (or IRLVLA_TRUST_PICKLE=1) if you trust it, or --restart")


def train_ppo(cfg: RunConfig, seed: int, run_dir: Path, progress: bool = True) -> dict[str, Any]:
    """Train (or resume) one SB3 PPO run; returns the run's timing metrics (also the checkpoint state)."""
    from irlvla_gym.plans.codec import action_to_plan
    from irlvla_gym.obs.config import ObsConfig

    run_dir = Path(run_dir)
    ckpt_dir = run_dir / "checkpoint"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(seed)

    # ---- env: identical for every variant (the reward is made once and shared by the N envs) ---------------------
    reward = make_reward(cfg)
    venv, vec_kind = make_sb3_vec_env(cfg, reward)

    # ---- model: resume from the last checkpoint, or build a new one -------------------------------------------------
    state: dict[str, Any] = {"step": 0, "wall_s": 0.0, "env_s": 0.0}
    if (ckpt_dir / "state.json").is_file() and (ckpt_dir / "model.zip").is_file():
        state = read_json(ckpt_dir / "state.json")
        model = PPOWithAnchor.load(str(trusted_checkpoint(ckpt_dir, state)), env=venv, device="cpu")
        print(f"resuming {run_dir} from step {state['step']}")
    else:
        model = build_model(cfg, venv, seed, tensorboard_log=str(run_dir / "tb"))
    needs_reference = cfg.bc.weight > 0 and (cfg.bc.kind in ("complement", "kl") or cfg.bc.targets != "expert")
    model.anchor = make_anchor(dataclasses.asdict(cfg.bc), cfg.env, seed=seed,  # None unless bc.weight > 0
                               reference=pretrained_reference(cfg, model) if needs_reference else None,
                               greedy_reward=reward if cfg.bc.targets != "expert" else None)
    critic = self_critical_wrapper(venv)  # reward_baseline 'mean-plan': it scores the policy's mean plans
    if critic is not None:
        critic.mean_actions = policy_mean_actions(model.policy)
    venv.env_seconds = float(state["env_s"])

    # ---- callbacks: curve, checkpoints, hooks, progress -------------------------------------------------------------
    curve = CurveWriter(run_dir / "curve.csv")
    curve.truncate(int(state["step"]))
    callback: RunCallback

    def save(step: int) -> None:
        model.save(str(ckpt_dir / "model.zip"))
        # the zip's hash lets a resume load this run's own pickle-bearing checkpoint without --trust-pickle
        write_json(ckpt_dir / "state.json", {"step": step, "wall_s": callback.wall(), "env_s": venv.env_seconds,
                                             "zip_sha256": file_sha256(ckpt_dir / "model.zip")})

    obs_keys = tuple(cfg.env.get("obs_keys", ()))
    obs_config = ObsConfig.from_dict(cfg.env.get("obs_config"))

    def plan(obs: Any) -> np.ndarray:
        actions, _ = model.policy.predict(dict(obs), deterministic=True)
        return action_to_plan(np.asarray(actions).reshape(-1, 24))

    def snapshot(step: int, record: Any) -> PolicySnapshot:
        return PolicySnapshot(step, model.policy, plan, obs_keys, obs_config, env_kwargs(cfg, reward), run_dir,
                              record)

    hooks = HookRunner(load_hooks(cfg.hooks, source=f"the {cfg.variant} config"), cfg.hook_interval)
    callback = RunCallback(curve, save, cfg.checkpoint_every, hooks, snapshot, cfg.total_timesteps,
                           start=int(state["step"]), wall_offset=float(state["wall_s"]), progress=progress,
                           desc=f"{cfg.variant} s{seed}")

    # ---- learn ---------------------------------------------------------------------------------------------------
    remaining = cfg.total_timesteps - int(state["step"])
    if remaining > 0:
        model.learn(remaining, callback=callback, reset_num_timesteps=state["step"] == 0, tb_log_name="ppo")
    else:  # stopped after its last update, before done.json: nothing to learn, but the final hooks still log
        from stable_baselines3.common.utils import configure_logger

        model.set_logger(configure_logger(0, model.tensorboard_log, "ppo", reset_num_timesteps=False))
    final_record = lambda name, value: model.logger.record(name, value)  # noqa: E731
    hooks.maybe_run(int(model.num_timesteps), lambda: snapshot(int(model.num_timesteps), final_record))
    model.logger.dump(int(model.num_timesteps))
    hooks.finish(lambda: snapshot(int(model.num_timesteps), final_record))

    # ---- final files: model.zip + its sidecar (env settings, row name) is a leaderboard agent spec ----------------
    from irlvla_gym.agents import env_settings_of, save_sb3_model, write_sidecar

    settings = {"env_id": ENV_ID, **env_settings_of(venv)}
    label = f"{cfg.variant}/s{seed}"
    if cfg.policy == "vla":  # the sidecar points the zip at the network, evaluated as in the table (no pickle)
        model.save(str(run_dir / "model.zip"))
        model.policy.network.save_pretrained(run_dir / "network")
        write_sidecar(run_dir / "model.zip", settings, name=label, network="network")
    else:
        save_sb3_model(model, run_dir / "model.zip", name=label, settings=settings)
    steps = int(model.num_timesteps)
    wall = callback.wall()
    save(steps)
    venv.close()
    return {"steps": steps, "wall_s": wall, "env_s": venv.env_seconds, "vec_env": vec_kind,
            "finished_at": time.time()}


__all__ = ["build_model", "train_ppo"]
