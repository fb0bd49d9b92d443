"""Third-party algorithms as baselines: same env, scenes, budget and evaluation as the built-in variants.

A run with ``algorithm: plugin`` and ``plugin: <spec>`` trains the algorithm named by ``spec`` (an
``irlvla_gym.algorithms`` entry point, ``module:attr``, or a built-in SB3 name such as ``a2c``) with
:func:`irlvla_gym.agents.train_algorithm` on ``IRLVLA-Navsim-v2`` made from the run's ``env`` settings and ``reward``,
for ``total_timesteps`` env steps. The returned agent is evaluated by the runner exactly like the PPO variants, so the
row lands on the same table. SB3 models are saved to ``model.zip`` + ``model.irlvla.json`` (the env settings and row
name), a leaderboard agent spec (``irlvla leaderboard --agents <run_dir>/model.zip --trust-pickle``); other agents
live only in the run.

Example (``baselines/configs/plugin-a2c.yaml``)::

    irlvla baselines train plugin-a2c --preset quick --seed 0
    irlvla baselines train my-algo --config baselines/configs/plugin-a2c.yaml --set plugin=mypkg.algos:MyAlgo \
        --allow-import mypkg

Files in the run dir, as the PPO runs': ``curve.csv`` (one row per rollout: training reward, rule-based EPDMS and
sub-scores, and the learned-reward gap; :class:`~baselines.callbacks.SubscoreCallback`) and, for SB3 algorithms,
``tb/`` (SB3's own TensorBoard scalars plus ``rollout/subscore_*``, ``rollout/epdms``, ``rollout/reward_gap``).
Algorithms that are plain ``train(env_fn, budget, seed)`` callables run no SB3 loop: their ``curve.csv`` rows come
from the env wrapper (:class:`TimedEnv`, every ``CURVE_EVERY`` env steps) and they get no ``tb/``.

``plugin`` comes from a config file, so only registered names resolve by default (built-in SB3 names and
``irlvla_gym.algorithms`` entry points); a ``module:attr`` is imported only under ``--allow-import`` /
``IRLVLA_ALLOW_IMPORT`` (:func:`check_plugin_spec`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Sequence

import gymnasium as gym
import numpy as np

from baselines.config import ENV_ID, RunConfig
from baselines.envs import env_kwargs


CURVE_EVERY = 256
"""Env steps per ``curve.csv`` row of a plug-in without an SB3 loop (callable algorithms)."""


class _StepClock:
    """Seconds and env steps spent inside ``step`` across every env the algorithm makes; optionally the curve rows
    of a plug-in without an SB3 loop (``curve``: a :class:`~baselines.hooks.CurveWriter`)."""

    def __init__(self, curve: Any = None, rule_scorer: Any = None) -> None:
        from baselines.callbacks import RolloutScores

        self.seconds = 0.0
        self.steps = 0
        self.curve, self.scores, self.rewards = curve, RolloutScores(rule_scorer), []
        self.t0 = time.perf_counter()

    def record(self, reward: float, info: Any) -> None:
        if self.curve is None:
            return
        self.rewards.append(float(reward))
        self.scores.add([info], [reward])
        if len(self.rewards) >= CURVE_EVERY:
            self.curve.add(self.steps, np.asarray(self.rewards), time.perf_counter() - self.t0,
                           scores=self.scores.summary())
            self.scores.reset()
            self.rewards = []


class TimedEnv(gym.Wrapper):
    """Adds the time spent in ``step`` to a shared :class:`_StepClock` (the plug-in may make several envs)."""

    def __init__(self, env: gym.Env, clock: _StepClock):
        super().__init__(env)
        self.clock = clock

    def step(self, action):
        t = time.perf_counter()
        out = self.env.step(action)
        self.clock.seconds += time.perf_counter() - t
        self.clock.steps += 1
        self.clock.record(out[1], out[4])
        return out


def check_plugin_spec(spec: str, source: str = "the run config", allow_import: Sequence[str] = ()) -> None:
    """Refuse (:class:`~irlvla_gym.agents.UntrustedInputError`, naming ``source`` and the field ``plugin``) a spec
    that is no registered algorithm name and whose module is not allowed by ``allow_import`` /
    ``IRLVLA_ALLOW_IMPORT``: resolving it would import code named by a config file."""
    from irlvla_gym.agents import UntrustedInputError, available_algorithms, import_allowed

    names = available_algorithms()
    if spec.strip() in names or spec.strip().lower() in names:
        return
    module = spec.partition(":")[0].strip()
    if not import_allowed(module, allow_import):
        raise UntrustedInputError(
            f"{source}: plugin = {spec!r} is not a registered algorithm ({sorted(names)}; plug-ins register in the "
            f"entry-point group 'irlvla_gym.algorithms'); importing {module!r} from a config needs --allow-import "
            f"{module} (or IRLVLA_ALLOW_IMPORT={module})")


def train_sb3_plugin(algorithm: type, env_fn: Callable[[], gym.Env], cfg: RunConfig, seed: int, run_dir: Path,
                     callback: Any) -> Any:
    """An SB3 ``BaseAlgorithm`` subclass trained like :func:`irlvla_gym.agents.train_algorithm` does (policy by
    observation space, CPU, the run's ``plugin_kwargs``), plus TensorBoard in ``run_dir/tb`` and ``callback``;
    returns the :class:`~irlvla_gym.agents.SB3ModelAgent`."""
    from irlvla_gym.agents import SB3ModelAgent

    env = env_fn()
    policy = "MultiInputPolicy" if isinstance(env.observation_space, gym.spaces.Dict) else "MlpPolicy"
    kwargs = {"seed": seed, "device": "cpu", "verbose": 0, "tensorboard_log": str(Path(run_dir) / "tb"),
              **cfg.plugin_kwargs}
    model = algorithm(policy, env, **kwargs)
    model.learn(total_timesteps=int(cfg.total_timesteps), callback=callback, tb_log_name=cfg.variant)
    from irlvla_gym.agents import env_settings_of

    return SB3ModelAgent(model, name=cfg.variant, env_settings=env_settings_of(env))


def train_plugin(cfg: RunConfig, seed: int, run_dir: Path,
                 allow_import: Sequence[str] = ()) -> tuple[dict[str, Any], Any]:
    """Train ``cfg.plugin`` on the run's env; returns (metrics like the PPO runs', the trained agent). Writes
    ``curve.csv`` (and ``tb/`` for SB3 algorithms) in ``run_dir``."""
    from stable_baselines3.common.base_class import BaseAlgorithm

    from baselines.callbacks import RuleScorer, SubscoreCallback, is_learned_reward
    from baselines.hooks import CurveWriter
    from irlvla_gym.agents import SB3ModelAgent, load_algorithm, train_algorithm

    check_plugin_spec(str(cfg.plugin), f"config of variant {cfg.variant!r}", allow_import)

    kwargs = env_kwargs(cfg)
    rule_scorer = RuleScorer(kwargs) if is_learned_reward(kwargs.get("reward")) else None
    curve = CurveWriter(Path(run_dir) / "curve.csv")
    curve.truncate(0)  # a plug-in run does not resume: a rerun starts the curve over
    algorithm = load_algorithm(cfg.plugin)
    is_sb3 = isinstance(algorithm, type) and issubclass(algorithm, BaseAlgorithm)
    clock = _StepClock(None if is_sb3 else curve, rule_scorer)

    def env_fn() -> gym.Env:
        return TimedEnv(gym.make(ENV_ID, **kwargs), clock)

    t = time.perf_counter()
    if is_sb3:
        callback = SubscoreCallback(rule_scorer, curve=curve, dump=True)
        agent = train_sb3_plugin(algorithm, env_fn, cfg, seed, run_dir, callback)
    else:
        agent = train_algorithm(algorithm, env_fn, cfg.total_timesteps, seed, name=cfg.variant, **cfg.plugin_kwargs)
    wall = time.perf_counter() - t
    agent.name = f"{cfg.variant}/s{seed}"
    if isinstance(agent, SB3ModelAgent):  # model.zip + sidecar: an agent spec (irlvla leaderboard --agents)
        agent.save(Path(run_dir) / "model.zip", name=agent.name)
    return {"steps": max(clock.steps, 1), "wall_s": wall, "env_s": clock.seconds, "plugin": cfg.plugin}, agent


__all__ = ["CURVE_EVERY", "TimedEnv", "check_plugin_spec", "train_plugin", "train_sb3_plugin"]
