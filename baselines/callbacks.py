"""Sub-scores in TensorBoard: what the training reward is made of, and how far a learned reward is from the scorer.

Every env step's ``info["rewards"]`` carries the rule-based scorer's sub-scores (``nc, dac, ddc, tlc, ep, ttc, lk,
hc, ec``) and ``epdms`` when the reward is the built-in EPDMS. With a learned reward (``reward="rwm"``, an ensemble,
any callable) it carries only ``{"custom": value}``; then :class:`RuleScorer` scores a sample of the rollout's plans
(``info["plan"]``, ``info["scene_index"]``) with the scorer under the env's protocol (log or IDM traffic, human
filter, EP relative to the logged expert), and ``reward_gap`` = mean learned reward - mean scorer EPDMS of the same
transitions (positive: the policy is paid more than the rules would pay it, where hacking shows).

At each rollout end (once at least ``min_steps`` transitions were seen; off-policy algorithms collect a few steps
per "rollout") :class:`SubscoreCallback` records, in [0, 1] except the gap:

* ``rollout/subscore_<name>`` for each sub-score present; ``rollout/epdms``;
* ``rollout/reward_gap`` (learned rewards only).

The baselines attach it to every SB3 run (:class:`baselines.hooks.RunCallback` holds a :class:`RolloutScores`;
plug-in runs get a :class:`SubscoreCallback` with a curve file). Standalone::

    model.learn(4096, callback=SubscoreCallback())
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

SCORE_NAMES = ("nc", "dac", "ddc", "tlc", "ep", "ttc", "lk", "hc", "ec")
"""The sub-scores of ``info["rewards"]`` (as :data:`irlvla_gym.metrics.config.SUB_SCORES`)."""
SCORE_FIELDS = ("epdms", "reward_gap", *(f"subscore_{n}" for n in SCORE_NAMES))
"""Keys of a :meth:`RolloutScores.summary` (also the extra columns of ``curve.csv``)."""


class RuleScorer:
    """The rule-based scorer's sub-scores and EPDMS of a plan-once env's plans, by scene index.

    Args:
        env_kwargs: the env's keyword arguments (``scenes`` or ``split``, ``num_scenes``, ``traffic``,
            ``human_filter`` are read; the rest is ignored). cache_size: scenes kept prepared (LRU).
    """

    def __init__(self, env_kwargs: Mapping[str, Any], cache_size: int = 64):
        from irlvla_gym.cache import LRU

        self.scenes = env_kwargs.get("scenes")
        self.split = str(env_kwargs.get("split") or "synthetic-train")
        self.num_scenes = env_kwargs.get("num_scenes")
        self.traffic = str(env_kwargs.get("traffic", "log"))
        self.human_filter = bool(env_kwargs.get("human_filter", True))
        self.source: Any = None
        self.bundles = LRU(int(cache_size))

    def bundle(self, scene_index: int) -> Any:
        """The prepared scene (scoring context, expert reference progress) of ``scene_index`` of the env's scenes:
        the envs' own when this process's envs hold it (their process-wide cache of the same scenes, traffic model
        and map-index cells, so the same values: a rollout's scenes are there, and preparing them again took ~30 ms
        each, an eighth of a quick PPO run), else prepared here."""
        from irlvla_gym.cache import existing_shared_lru
        from irlvla_gym.envs.scoring import DEFAULT_INDEX_RESOLUTION_M, make_bundle
        from irlvla_gym.scenes.source import SceneSource

        if self.source is None:
            self.source = SceneSource(self.scenes, split=self.split, num_scenes=self.num_scenes)
        env_bundles = existing_shared_lru((self.source.cache_key[0], self.traffic, DEFAULT_INDEX_RESOLUTION_M))
        shared = env_bundles.peek(int(scene_index)) if env_bundles is not None else None
        if shared is not None:
            return shared
        return self.bundles.get(scene_index,
                                lambda: make_bundle(scene_index, self.source.load(scene_index), self.traffic))

    def score_many(self, scene_indices: Sequence[int], plans: np.ndarray) -> dict[str, np.ndarray]:
        """Sub-scores and ``epdms``, name -> (R,), of R plans (R, 8, 3), row r in scene ``scene_indices[r]``: one
        tracker call and one multi-scene scorer call with the prepared scenes' expert scores (the env's own step;
        row r equals ``self(scene_indices[r], plans[r])``, which simulates and scores the expert again per plan)."""
        from irlvla_gym.envs.scoring import score_bundle_rows
        from irlvla_gym.metrics import agent_tracks
        from irlvla_gym.sim import simulate_plans

        bundles = [self.bundle(int(i)) for i in scene_indices]
        states = simulate_plans(np.stack([b.start_state for b in bundles]), np.asarray(plans, np.float64))
        if self.traffic == "log":
            agents = [b.log_agents for b in bundles]
        else:
            agents = [agent_tracks(b.scene, self.traffic, states[r:r + 1]) for r, b in enumerate(bundles)]
        _, final = score_bundle_rows(bundles, states, agents, human_filter=self.human_filter, pack="none")
        return {k: np.asarray(final[k], np.float64) for k in (*SCORE_NAMES, "epdms")}

    def __call__(self, scene_index: int, plan: np.ndarray) -> dict[str, float]:
        """Sub-scores and ``epdms`` of ``plan`` (8, 3) (m, m, rad in the t0 ego frame) in scene ``scene_index``."""
        return {k: float(v[0]) for k, v in self.score_many([scene_index], np.asarray(plan).reshape(1, 8, 3)).items()}


class RolloutScores:
    """Per-rollout accumulator of ``info["rewards"]`` (see module docs).

    Args:
        rule_scorer: ``(scene_index, plan) -> scores``, used for infos without ``epdms`` (learned rewards); None
            leaves ``epdms`` / ``reward_gap`` out for them. max_rule_scored: transitions re-scored per rollout.
    """

    def __init__(self, rule_scorer: Callable[[int, np.ndarray], Mapping[str, float]] | None = None,
                 max_rule_scored: int = 16):
        self.rule_scorer, self.max_rule_scored = rule_scorer, int(max_rule_scored)
        self.reset()

    def reset(self) -> None:
        self.values: dict[str, list[float]] = {}
        self.learned: list[tuple[float, int, np.ndarray]] = []
        self.steps = 0

    def add(self, infos: Sequence[Mapping[str, Any]], rewards: Sequence[float] | np.ndarray) -> None:
        """One vector step: ``infos`` (N dicts) and the rewards paid (N,)."""
        self.steps += len(infos)
        for info, reward in zip(infos, np.asarray(rewards, np.float64).reshape(-1)):
            scores = info.get("rewards") or {}
            if "epdms" in scores:
                for name in (*SCORE_NAMES, "epdms"):
                    if name in scores:
                        self.values.setdefault(name, []).append(float(scores[name]))
            elif "custom" in scores and "plan" in info and "scene_index" in info and "time" not in info:
                self.learned.append((float(reward), int(info["scene_index"]), np.asarray(info["plan"])))

    def summary(self) -> dict[str, float]:
        """Means over the rollout: ``epdms``, ``subscore_<name>``, ``reward_gap`` (only the keys measured)."""
        values = {k: list(v) for k, v in self.values.items()}
        gap: list[float] = []
        if self.learned and self.rule_scorer is not None:
            pick = np.linspace(0, len(self.learned) - 1, min(len(self.learned), self.max_rule_scored)).astype(int)
            picked = [self.learned[i] for i in pick]
            for (reward, _, _), scores in zip(picked, self._rule_scores(picked)):
                for name, value in scores.items():
                    values.setdefault(name, []).append(float(value))
                gap.append(reward - float(scores["epdms"]))
        out = {("epdms" if k == "epdms" else f"subscore_{k}"): float(np.mean(v)) for k, v in values.items() if v}
        if gap:
            out["reward_gap"] = float(np.mean(gap))
        return out

    def _rule_scores(self, picked: Sequence[tuple[float, int, np.ndarray]]) -> list[dict[str, float]]:
        """The rule scorer's scores of the picked transitions, in one batched call when it has ``score_many``."""
        many = getattr(self.rule_scorer, "score_many", None)
        if many is None:
            return [self.rule_scorer(scene_index, plan) for _, scene_index, plan in picked]
        columns = many([s for _, s, _ in picked], np.stack([np.asarray(p).reshape(8, 3) for _, _, p in picked]))
        return [{k: float(v[r]) for k, v in columns.items()} for r in range(len(picked))]


class SubscoreCallback(BaseCallback):
    """Logs the rollout's sub-scores, EPDMS and learned-reward gap (module docs) at each rollout end.

    Args:
        rule_scorer: see :class:`RolloutScores` (e.g. ``RuleScorer(env_kwargs)`` for a learned reward).
        min_steps: transitions to accumulate before recording (off-policy rollouts can be one step).
        curve: optional :class:`baselines.hooks.CurveWriter`: a row (step, rewards, wall, scores) per record.
        dump: write the logger out after each record (SB3 dumps only every ``log_interval`` iterations, 100 for
            A2C, or episodes for off-policy algorithms, so a short run would otherwise log nothing).
    """

    def __init__(self, rule_scorer: Callable[[int, np.ndarray], Mapping[str, float]] | None = None,
                 min_steps: int = 64, curve: Any = None, max_rule_scored: int = 16, dump: bool = False):
        super().__init__()
        self.scores = RolloutScores(rule_scorer, max_rule_scored)
        self.min_steps, self.curve, self.dump = int(min_steps), curve, bool(dump)
        self.rewards: list[float] = []
        self.last: dict[str, float] = {}
        self.t0 = 0.0

    def _on_training_start(self) -> None:
        import time

        self.t0 = time.perf_counter()

    def _on_step(self) -> bool:
        rewards = self.locals.get("rewards", np.zeros(len(self.locals.get("infos", ()))))
        self.scores.add(self.locals.get("infos", ()), rewards)
        self.rewards.extend(np.asarray(rewards, np.float64).reshape(-1).tolist())
        return True

    def _on_rollout_end(self) -> None:
        if self.scores.steps >= self.min_steps:
            self.flush()

    def _on_training_end(self) -> None:
        if self.scores.steps > 0:  # the last, partial window
            self.flush()

    def flush(self) -> None:
        """Record (and with ``dump`` write out) the accumulated window; a curve row when a curve is attached."""
        import time

        self.last = record_scores(self.logger, self.scores)
        if self.curve is not None and self.rewards:
            self.curve.add(int(self.num_timesteps), np.asarray(self.rewards), time.perf_counter() - self.t0,
                           scores=self.last)
        self.rewards = []
        if self.dump:
            self.logger.dump(int(self.num_timesteps))


def record_scores(logger: Any, scores: RolloutScores) -> dict[str, float]:
    """Record ``scores``' summary as ``rollout/<key>`` on an SB3 logger, reset it; returns the summary."""
    summary = scores.summary()
    for key, value in summary.items():
        logger.record(f"rollout/{key}", value)
    scores.reset()
    return summary


def is_learned_reward(reward: Any) -> bool:
    """True when an env's ``reward`` argument is not the rule-based scorer (a callable, ``"rwm"``, ...)."""
    if reward is None:
        return False
    if not isinstance(reward, str):
        return True
    from irlvla_gym.rewards import parse_reward

    return parse_reward(reward).learned


__all__ = ["RolloutScores", "RuleScorer", "SCORE_FIELDS", "SCORE_NAMES", "SubscoreCallback", "is_learned_reward",
           "record_scores"]
