"""Reward-greedy plans: per scene, the learned reward's pick among a policy's plan and smooth perturbations of it.

One greedy step of policy improvement that asks only the reward world model (no scorer, no simulator): for each
scene the policy plans once (its deterministic plan), :func:`irlvla_gym.plans.exploration.perturb_actions` draws
``samples`` smooth perturbations of it (the directions and stds of PPO's smooth exploration), and the RWM scores
all ``1 + samples`` plans. The pick is the plan with the highest predicted EPDMS among those whose predicted
safety sub-scores (no collision, drivable area, time to collision) are at most ``safety_margin`` below the policy
plan's own: the policy's plan always qualifies, so a pick never trades predicted safety for progress. Without the
margin (None) the pick is the plain argmax.

The teacher is a reward world model (:class:`~reward_models.reward_fn.SceneRewardFn`: predicted EPDMS and predicted
sub-scores) or, for like-for-like comparisons only, the rule-based scorer (``reward="epdms"``:
:func:`rule_candidate_scores`, true EPDMS and true sub-scores, EP normalised by PDM-Closed; IRL-VLA never uses it).

Distilling the picks into the policy (``irlvla bc --init POLICY --target-plans PLANS``) moves it toward what the
reward prefers scene by scene, which PPO alone at our budgets does not (it learns global shifts); RL then starts
from the distilled policy (``distill:`` of a baseline run, :mod:`baselines.distill`). Write a plan file with
``irlvla rwm greedy-plans`` (the ``irlvla score`` format, so the scorer can check the picks).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from irlvla_gym.configs import count_or_all, float_or_none, option

SAFETY_SUB_SCORES = ("nc", "dac", "ttc")
"""Sub-scores a greedy pick may not predict worse than the policy's plan by more than the margin."""


@dataclass
class GreedyPlans:
    """The picks of :func:`greedy_plans` for N scenes.

    Attributes:
        tokens: (N,) scene tokens. plans: (N, 8, 3) picked plans [x, y, yaw] (m, rad, t0 ego frame).
        picked: (N,) index of the pick among the scene's candidates (0 = the policy's own plan).
        predicted_gain: (N,) predicted EPDMS of the pick minus that of the policy's plan (>= 0).
        check: with ``greedy_plans(..., check=True)``, the rule-based scorer's view of every scene, name -> (N,):
            ``epdms_own`` / ``epdms_pick`` / ``epdms_best`` (the policy's plan, the pick, the best candidate) and
            ``nc_own`` / ``nc_pick``; empty otherwise.
    """

    tokens: list[str]
    plans: np.ndarray
    picked: np.ndarray
    predicted_gain: np.ndarray
    check: dict[str, np.ndarray] = field(default_factory=dict)

    def summary(self) -> str:
        kept = float(np.mean(self.picked == 0)) if len(self.picked) else float("nan")
        text = (f"{len(self.tokens)} scenes: the policy's own plan kept in {100 * kept:.1f} %, mean predicted EPDMS "
                f"gain of the picks {float(np.mean(self.predicted_gain)):+.4f}")
        if self.check:
            c = self.check
            worse = float(np.mean(c["epdms_pick"] < c["epdms_own"] - 1e-6))
            better = float(np.mean(c["epdms_pick"] > c["epdms_own"] + 1e-6))
            text += (f"; rule-based scorer: EPDMS own {c['epdms_own'].mean():.4f}, pick {c['epdms_pick'].mean():.4f}, "
                     f"best candidate {c['epdms_best'].mean():.4f}; picks worse than the policy's plan in "
                     f"{100 * worse:.1f} %, better in {100 * better:.1f} %; NC own {c['nc_own'].mean():.3f}, pick "
                     f"{c['nc_pick'].mean():.3f}")
        return text


def candidate_actions(means: np.ndarray, samples: int, rng: np.random.Generator) -> np.ndarray:
    """(B, 1 + samples, 24) candidates: each mean action (B, 24) first, then its smooth perturbations, clipped to
    the action box [-1, 1]."""
    from irlvla_gym.plans.exploration import perturb_actions

    means = np.asarray(means, np.float64)
    return np.clip(np.stack([np.concatenate([m[None], perturb_actions(m, samples, rng)]) for m in means]), -1.0, 1.0)


CandidateScores = Callable[[Sequence[Any], np.ndarray], tuple[np.ndarray, dict[str, np.ndarray]]]
"""``(B scenes, plans (B, K, 8, 3)) -> (EPDMS (B, K), {sub-score: (B, K)} of SAFETY_SUB_SCORES)``."""


def rwm_candidate_scores(reward: Any) -> CandidateScores:
    """Candidate scores of a :class:`~reward_models.reward_fn.SceneRewardFn`: one batched encoding of the scenes, one
    forward pass for all B x K plans; the model's expected sub-scores decide safety."""
    import torch

    def score(scenes: Sequence[Any], plans: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        with torch.no_grad():
            out = reward.model.score(reward.encode_batch(list(scenes)), np.asarray(plans, np.float32))
        safety = {name: out.expected[name].numpy() for name in SAFETY_SUB_SCORES if name in out.expected}
        return out.reward.numpy().astype(np.float64), safety

    return score


def rule_candidate_scores(scenes: Sequence[Any], plans: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Candidate scores of the rule-based scorer (NAVSIM v2 protocol: human filter, EP relative to PDM-Closed)."""
    from irlvla_gym.metrics import score_plans
    from irlvla_gym.planners import pdm_reference_progress

    rows = [score_plans(s, p, reference_progress=pdm_reference_progress(s)) for s, p in zip(scenes, plans)]
    epdms = np.stack([np.asarray(r.epdms, np.float64) for r in rows])
    return epdms, {name: np.stack([np.asarray(getattr(r, name), np.float64) for r in rows])
                   for name in SAFETY_SUB_SCORES}


def candidate_scores_of(reward: str | None) -> CandidateScores:
    """The teacher named by ``reward``: ``"epdms"`` = the rule-based scorer, anything else a reward world model
    checkpoint (shipped name or directory; None = the shipped default)."""
    if reward == "epdms":
        return rule_candidate_scores
    from reward_models.reward_fn import SceneRewardFn

    return rwm_candidate_scores(SceneRewardFn(reward, cache_size=1))


def pick_index(reward: np.ndarray, safety: dict[str, np.ndarray], safety_margin: float | None) -> np.ndarray:
    """(B,) index of the pick per scene from predicted rewards (B, K) and predicted safety sub-scores (B, K) each;
    candidate 0 (the policy's plan) always qualifies."""
    reward = np.asarray(reward, np.float64)
    if safety_margin is not None:
        allowed = np.ones(reward.shape, bool)
        for values in safety.values():
            values = np.asarray(values, np.float64)
            allowed &= values >= values[:, :1] - float(safety_margin)
        reward = np.where(allowed, reward, -np.inf)
    return reward.argmax(axis=1)


def greedy_plans(agent: Any, reward: Any, scenes: Sequence[Any], samples: int = 16,
                 safety_margin: float | None = 0.02, seed: int = 0, chunk: int = 64,
                 progress: bool = True, check: bool = False) -> GreedyPlans:
    """The reward's greedy picks around ``agent``'s plans (module docs).

    Args:
        agent: a leaderboard agent with ``obs_keys`` and ``plan_batch(observations, scenes)`` (a VLA checkpoint:
            ``irlvla_gym.agents.load_agent('bc_default')``) or ``plan(observation, scene)``.
        reward: a :class:`reward_models.reward_fn.SceneRewardFn` (its model's expected sub-scores decide safety) or
            a :data:`CandidateScores` callable (e.g. :func:`rule_candidate_scores`).
        scenes: a sequence of scenes (a ``SceneSource`` works: ``len`` and ``[i]`` / ``load``).
        samples: smooth perturbations per scene. safety_margin: see module docs (None: plain argmax).
        seed: seed of the perturbations. chunk: scenes per batched policy / reward call.
        check: also score every candidate with the rule-based scorer (:attr:`GreedyPlans.check`; a diagnosis of
            the teacher, e.g. on real windows: it costs a scorer call per candidate, and the picks do not change).
    """
    from tqdm.auto import tqdm

    from irlvla_gym.obs import ObservationBuilder
    from irlvla_gym.plans.codec import ACTION_DIM, action_to_plan, plan_to_action

    score = rwm_candidate_scores(reward) if hasattr(reward, "model") else reward
    builder = ObservationBuilder(agent.obs_keys, getattr(agent, "obs_config", None)) if agent.obs_keys else None
    load = scenes.load if hasattr(scenes, "load") else scenes.__getitem__
    rng = np.random.default_rng(seed)
    tokens, plans, picked, gains = [], [], [], []
    checks: dict[str, list[np.ndarray]] = {}
    with tqdm(total=len(scenes), desc="greedy plans", unit="scene", disable=not progress, mininterval=2) as bar:
        for start in range(0, len(scenes), chunk):
            batch = [load(i) for i in range(start, min(len(scenes), start + chunk))]
            obs = builder.observe_batch(batch) if builder is not None else {}
            if hasattr(agent, "plan_batch"):
                own = np.asarray(agent.plan_batch(obs, batch), np.float64)
            else:
                own = np.stack([agent.plan({k: v[i] for k, v in obs.items()}, s) for i, s in enumerate(batch)])
            candidates = candidate_actions(plan_to_action(own), samples, rng)  # (B, K, 24)
            cand_plans = action_to_plan(candidates.reshape(-1, ACTION_DIM)).reshape(len(batch), -1, 8, 3)
            cand_plans[:, 0] = own  # the policy's plan as it is (its action is clipped to the box)
            predicted, safety = score(batch, cand_plans)  # (B, K) and {name: (B, K)}
            best = pick_index(predicted, safety, safety_margin)
            rows = np.arange(len(batch))
            tokens += [s.token for s in batch]
            plans.append(cand_plans[rows, best])
            picked.append(best)
            gains.append(predicted[rows, best] - predicted[:, 0])
            if check:
                for name, values in _check_picks(batch, cand_plans, best).items():
                    checks.setdefault(name, []).append(values)
            bar.update(len(batch))
    empty = np.zeros(0)
    return GreedyPlans(tokens, np.concatenate(plans) if plans else np.zeros((0, 8, 3)),
                       np.concatenate(picked) if picked else empty.astype(int),
                       np.concatenate(gains) if gains else empty,
                       {name: np.concatenate(values) for name, values in checks.items()})


def _check_picks(scenes: Sequence[Any], plans: np.ndarray, best: np.ndarray) -> dict[str, np.ndarray]:
    """The rule-based scorer's view of one batch's picks (:attr:`GreedyPlans.check`); plans (B, K, 8, 3)."""
    epdms, safety = rule_candidate_scores(scenes, plans)
    rows = np.arange(len(best))
    return {"epdms_own": epdms[:, 0], "epdms_pick": epdms[rows, best], "epdms_best": epdms.max(axis=1),
            "nc_own": safety["nc"][:, 0], "nc_pick": safety["nc"][rows, best]}


@dataclass
class GreedyPlansConfig:
    """``irlvla rwm greedy-plans``: each field is the CLI flag of the same name (module docs)."""

    out: str = option("runs/greedy_plans.npz", required=True)
    """plan file to write (.npz: tokens (N,), plans (N, 8, 3); the ``irlvla score`` / ``irlvla bc --target-plans``
    format)"""
    policy: str = "bc_default"
    """the policy whose plans are perturbed: a leaderboard agent spec (shipped VLA name, checkpoint directory, ...)"""
    reward: str | None = None
    """reward world model checkpoint (shipped name, e.g. smooth, or a directory; default: the shipped default), or
    epdms: the rule-based scorer (for comparisons)"""
    split: str = "synthetic-train"
    """synthetic split of the scenes (used when --scenes is not given)"""
    scenes: str | None = option(None, metavar="STORE")
    """scene-store directory instead"""
    num_scenes: int | None = option(4000, type=count_or_all)
    """the first N scenes (0 on the command line, None in Python: all)"""
    samples: int = 16
    """smooth perturbations per scene"""
    safety_margin: float | None = option(0.02, type=float_or_none)
    """a pick may predict NC, DAC and TTC at most this much below the policy's plan (none: plain argmax)"""
    seed: int = 0
    """seed of the perturbations"""
    trust_pickle: bool = False
    """allow an SB3 model .zip as the policy (SB3's load unpickles)"""
    check: bool = False
    """also score every candidate with the rule-based scorer and print how the picks compare with the policy's plan
    and the best candidate (a diagnosis of the teacher; the picks and the file do not change)"""
    progress: bool = True
    """progress bar"""


def run_greedy_plans(cfg: GreedyPlansConfig) -> GreedyPlans:
    """Write the plan file of ``cfg`` (atomically) and return the picks."""
    from irlvla_gym.agents import load_agent
    from irlvla_gym.plans.files import save_plans
    from irlvla_gym.scenes.source import SceneSource
    from irlvla_gym.utils import limit_torch_threads

    limit_torch_threads()
    source = SceneSource(cfg.scenes, split=cfg.split, num_scenes=cfg.num_scenes)
    picks = greedy_plans(load_agent(cfg.policy, trust_pickle=cfg.trust_pickle), candidate_scores_of(cfg.reward),
                         source, cfg.samples, cfg.safety_margin, cfg.seed, progress=cfg.progress, check=cfg.check)
    save_plans(Path(cfg.out), picks.tokens, picks.plans)
    return picks


__all__ = ["CandidateScores", "GreedyPlans", "GreedyPlansConfig", "SAFETY_SUB_SCORES", "candidate_actions",
           "candidate_scores_of", "greedy_plans", "pick_index", "rule_candidate_scores", "rwm_candidate_scores",
           "run_greedy_plans"]
