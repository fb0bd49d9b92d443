"""Training hooks: user code called at a fixed interval of env steps during any baseline's training.

The reward-hacking probe (:mod:`baselines.hacking`) measures, during PPO on the learned reward, how the policy's
plans score under the reward model and under the rule-based scorer. It plugs in here: a :class:`TrainingHook` gets a
:class:`PolicySnapshot` (the live policy, a deterministic ``plan`` function on observation batches, the env
settings, a scalar logger) every ``hook_interval`` env steps, after a policy update, in the SB3 variants (through
:class:`HookCallback`) and in the DPPO loop alike::

    class MyProbe:
        def __init__(self, num_scenes: int = 32): ...
        def on_interval(self, snap: PolicySnapshot) -> dict[str, float]:
            plans = snap.plan(observations)          # (B, 8, 3) metric plans of the current policy
            return {"probe/epdms": ...}              # logged to TensorBoard under these names
        def on_training_end(self, snap: PolicySnapshot) -> None: ...   # optional (e.g. write a PNG to snap.run_dir)

    # config:  hook_interval: 1024
    #          hooks: [{class: "my-probe", kwargs: {num_scenes: 32}}]

A config names a hook by a registered name: the built-ins (:data:`BUILTIN_HOOKS`) or an entry point of the group
``irlvla_gym.hooks`` (:data:`HOOK_GROUP`; ``my-probe = "my_pkg.probe:MyProbe"`` in the plug-in's pyproject.toml).
Any other ``module:attr`` is imported only when allowed explicitly (``--allow-import my_pkg`` or
``IRLVLA_ALLOW_IMPORT=my_pkg``): a yaml file must not be able to run arbitrary code.

This module also holds the SB3 callbacks of every run: learning curve (CSV), checkpoints for resume, progress bar,
and the rollout's sub-scores / rule-based EPDMS / learned-reward gap in TensorBoard (:mod:`baselines.callbacks`).
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

from baselines.callbacks import SCORE_FIELDS, RolloutScores, RuleScorer, is_learned_reward, record_scores

CURVE_FIELDS = ("step", "reward_mean", "reward_std", "wall_s")
"""The columns every curve row has; rows may add :data:`~baselines.callbacks.SCORE_FIELDS` (empty when unknown)."""


@dataclass
class PolicySnapshot:
    """What a hook sees.

    Attributes:
        step: env steps done. policy: the live policy module (SB3 ``ActorCriticPolicy`` or the DPPO agent).
        plan: deterministic plans of the current policy: env observation batch (key -> (B, ...)) -> (B, 8, 3).
        obs_keys / obs_config: what the policy observes (build probe observations with
            ``ObservationBuilder(obs_keys, obs_config)``). env: the run's env kwargs (``reward`` included).
        run_dir: the run's output directory. record: ``record(name, value)`` logs a scalar at ``step``.
    """

    step: int
    policy: Any
    plan: Callable[[Mapping[str, np.ndarray]], np.ndarray]
    obs_keys: tuple[str, ...]
    obs_config: Any
    env: Mapping[str, Any]
    run_dir: Path
    record: Callable[[str, float], None] = field(default=lambda name, value: None)


@runtime_checkable
class TrainingHook(Protocol):
    """Called every ``hook_interval`` env steps (see module docs). ``on_training_end`` is optional."""

    def on_interval(self, snapshot: PolicySnapshot) -> Mapping[str, float] | None: ...


HOOK_GROUP = "irlvla_gym.hooks"
"""Entry-point group of third-party training hooks (name -> ``module:Class``)."""
BUILTIN_HOOKS: dict[str, str] = {"probe": "baselines.hacking.probe:ProbeHook"}
"""Hooks shipped with the project: name -> ``module:Class`` (the target spelling resolves too)."""


def registered_hooks() -> dict[str, str]:
    """Every hook name a config may use: built-ins and ``irlvla_gym.hooks`` entry points (name -> target)."""
    from irlvla_gym.agents import entry_points_of

    out = dict(BUILTIN_HOOKS)
    for name, ep in entry_points_of(HOOK_GROUP).items():
        out.setdefault(name, ep.value)
    return out


def resolve_hook_class(spec: str, where: str = "hooks[0].class", source: str = "the run config",
                       allow_import: Sequence[str] = ()) -> Any:
    """The hook class of ``spec``: a registered name (or its exact target), else a ``module:attr`` whose module is
    allowed (:func:`irlvla_gym.agents.import_allowed`); otherwise :class:`~irlvla_gym.agents.UntrustedInputError`
    naming ``source`` (the config) and ``where`` (the field)."""
    from irlvla_gym.agents import UntrustedInputError, import_allowed, import_attr

    registered = registered_hooks()
    target = registered.get(spec, spec if spec in registered.values() else None)
    if target is None:
        module = spec.partition(":")[0]
        if ":" not in spec or not import_allowed(module, allow_import):
            raise UntrustedInputError(
                f"{source}: {where} = {spec!r} is not a registered hook ({sorted(registered)}; plug-ins register "
                f"in the entry-point group {HOOK_GROUP!r}); importing {module!r} from a config needs "
                f"--allow-import {module} (or IRLVLA_ALLOW_IMPORT={module})")
        target = spec
    return import_attr(target)


def load_hooks(specs: Sequence[Mapping[str, Any] | TrainingHook], source: str = "the run config",
               allow_import: Sequence[str] = ()) -> list[TrainingHook]:
    """Hooks from config specs ``{"class": "<registered name or allowed module:Class>", "kwargs": {...}}``
    (instances pass through); ``source`` names the config in errors (see :func:`resolve_hook_class`)."""
    hooks: list[TrainingHook] = []
    for i, spec in enumerate(specs):
        if not isinstance(spec, Mapping):
            hooks.append(spec)
            continue
        cls = resolve_hook_class(str(spec["class"]), f"hooks[{i}].class", source, allow_import)
        hooks.append(cls(**dict(spec.get("kwargs") or {})))
    return hooks


class HookRunner:
    """Calls hooks when ``step`` has advanced by ``interval`` since the last call (used by both loops)."""

    def __init__(self, hooks: Sequence[TrainingHook], interval: int):
        self.hooks, self.interval = list(hooks), int(interval)
        self.last = 0

    def maybe_run(self, step: int, snapshot: Callable[[], PolicySnapshot]) -> dict[str, float]:
        if not self.hooks or self.interval <= 0 or step - self.last < self.interval:
            return {}
        self.last = step
        snap = snapshot()
        out: dict[str, float] = {}
        for hook in self.hooks:
            for key, value in (hook.on_interval(snap) or {}).items():
                snap.record(key, float(value))
                out[key] = float(value)
        return out

    def finish(self, snapshot: Callable[[], PolicySnapshot]) -> None:
        if not self.hooks:
            return
        snap = snapshot()
        for hook in self.hooks:
            end = getattr(hook, "on_training_end", None)
            if callable(end):
                end(snap)


# ---------------------------------------------------------------------------------------------------------------------
# Learning curve file
# ---------------------------------------------------------------------------------------------------------------------


class CurveWriter:
    """``curve.csv``: one row per rollout (env step, mean and std of the training reward, wall seconds, and when
    measured the rule-based ``epdms``, ``reward_gap`` and ``subscore_<name>`` means; empty cells read as NaN).

    ``truncate(step)`` drops rows after a checkpoint (a resumed run recollects them). A file written before the
    score columns existed is rewritten with them (its rows keep empty score cells)."""

    fields = (*CURVE_FIELDS, *SCORE_FIELDS)

    def __init__(self, path: Path):
        self.path = Path(path)
        if not self.path.is_file():
            self._write([])
        elif self.path.read_text().partition("\n")[0].strip() != ",".join(self.fields):
            self._write(self.rows())

    def _write(self, rows: list[dict[str, Any]]) -> None:
        with open(self.path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=self.fields)
            writer.writeheader()
            writer.writerows([{k: ("" if v != v else v) for k, v in r.items() if k in self.fields} for r in rows])

    def rows(self) -> list[dict[str, float]]:
        with open(self.path, newline="") as fh:
            return [{k: float(v) if v not in ("", None) else float("nan") for k, v in row.items()}
                    for row in csv.DictReader(fh)]

    def truncate(self, step: int) -> None:
        self._write([r for r in self.rows() if r["step"] <= step])

    def add(self, step: int, rewards: np.ndarray, wall_s: float, scores: Mapping[str, float] | None = None) -> None:
        """Append a row: ``rewards`` (any shape) of the rollout, ``scores`` from
        :meth:`~baselines.callbacks.RolloutScores.summary` (keys outside :data:`SCORE_FIELDS` are ignored)."""
        row = {"step": int(step), "reward_mean": float(np.mean(rewards)), "reward_std": float(np.std(rewards)),
               "wall_s": round(float(wall_s), 3)}
        row.update({k: float(v) for k, v in (scores or {}).items() if k in SCORE_FIELDS})
        with open(self.path, "a", newline="") as fh:
            csv.DictWriter(fh, fieldnames=self.fields).writerow(row)


# ---------------------------------------------------------------------------------------------------------------------
# SB3 callbacks
# ---------------------------------------------------------------------------------------------------------------------


class RunCallback(BaseCallback):
    """Everything a baseline run needs from SB3's loop, in one callback:

    * after each rollout: a learning-curve row (mean training reward of the rollout; every episode is one step)
      and the rollout's sub-scores, rule-based EPDMS and (learned rewards) reward gap in TensorBoard
      (:mod:`baselines.callbacks`; with a learned reward the scorer re-scores 16 of the rollout's plans);
    * at the start of each rollout (= after the previous update): a checkpoint when ``checkpoint_every`` env steps
      have passed (``save(step)``), and the training hooks (:class:`HookRunner`);
    * a tqdm progress bar over env steps.

    Args:
        curve: the learning-curve file. save: ``save(step)`` writes a checkpoint. checkpoint_every: env steps.
        hooks: the hook runner. snapshot: ``snapshot(step, record)`` -> :class:`PolicySnapshot`.
        total: env steps of the whole run (progress bar). start: env steps already done (resume).
        wall_offset: wall seconds already spent (resume). progress: show the bar.
    """

    def __init__(self, curve: CurveWriter, save: Callable[[int], None], checkpoint_every: int, hooks: HookRunner,
                 snapshot: Callable[[int, Callable[[str, float], None]], PolicySnapshot], total: int, start: int = 0,
                 wall_offset: float = 0.0, progress: bool = True, desc: str = "train"):
        super().__init__()
        self.curve, self.save, self.every = curve, save, int(checkpoint_every)
        self.hooks, self.snapshot = hooks, snapshot
        self.total, self.start, self.wall_offset, self.progress, self.desc = total, start, wall_offset, progress, desc
        self.last_saved = start
        self.t0 = time.perf_counter()
        self.bar = None
        self.scores = RolloutScores()
        self.paid: list[np.ndarray] = []  # the rollout's rewards as the env paid them, one (N,) array per step

    def wall(self) -> float:
        return self.wall_offset + time.perf_counter() - self.t0

    def _on_training_start(self) -> None:
        from tqdm.auto import tqdm

        self.t0 = time.perf_counter()
        self.hooks.last = self.start
        env = self.snapshot(self.start, lambda name, value: None).env
        if is_learned_reward(env.get("reward")):
            self.scores = RolloutScores(RuleScorer(env))
        self.bar = tqdm(total=self.total, initial=self.start, desc=self.desc, unit="step", disable=not self.progress,
                        mininterval=2, dynamic_ncols=True)

    def _on_step(self) -> bool:
        infos = self.locals.get("infos", ())
        rewards = np.asarray(self.locals.get("rewards", ()), np.float64).reshape(-1)
        # what the env paid, before a self-critical baseline (baselines.envs.SelfCriticalReward) was subtracted
        paid = np.array([info.get("raw_reward", r) for info, r in zip(infos, rewards)], np.float64)
        self.paid.append(paid)
        self.scores.add(infos, paid)
        if self.bar is not None:
            self.bar.update(self.training_env.num_envs)
        return True

    def _on_rollout_start(self) -> None:
        step = int(self.model.num_timesteps)
        if step > self.start and step - self.last_saved >= self.every:
            self.save(step)
            self.last_saved = step
        record = lambda name, value: self.logger.record(name, value)  # noqa: E731 - dumped with SB3's next dump
        self.hooks.maybe_run(step, lambda: self.snapshot(step, record))

    def _on_rollout_end(self) -> None:
        rewards = np.concatenate(self.paid) if self.paid else self.model.rollout_buffer.rewards
        self.paid = []
        scores = record_scores(self.logger, self.scores)
        self.curve.add(int(self.model.num_timesteps), rewards, self.wall(), scores=scores)
        self.logger.record("rollout/reward_mean", float(np.mean(rewards)))
        if self.bar is not None:
            self.bar.set_postfix(reward=f"{float(np.mean(rewards)):.3f}")

    def _on_training_end(self) -> None:
        if self.bar is not None:
            self.bar.close()


__all__ = ["BUILTIN_HOOKS", "CURVE_FIELDS", "CurveWriter", "HOOK_GROUP", "HookRunner", "PolicySnapshot", "RunCallback",
           "TrainingHook", "load_hooks", "registered_hooks", "resolve_hook_class"]
