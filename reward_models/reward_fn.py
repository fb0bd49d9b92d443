"""The RWM as a reward: for the IRL-VLA envs (``reward="rwm"``) and for reward-wrapping tools of other libraries.

* :func:`load_model` / :func:`load_default`: the shipped checkpoint (``reward_models/checkpoints/default``), another
  shipped checkpoint by name (``"policy_aware"``) or a checkpoint directory, cached per path.
* :class:`SceneRewardFn`: ``(scene, plan (8, 3)) -> float``, the callable the envs use for ``reward="rwm"`` or
  ``reward="rwm:<name or /path/to/ckpt>"``. It builds the model's observation of the scene (``irlvla_gym.obs``:
  bev, ego, instruction, agents, map at the scene origin and t0; the closed-loop env hands in the scene as seen from the
  current ego state, so that is the current observation) and caches the scene encoding, so repeated plans in the
  same scene (vocabulary search, several env steps) cost only the plan scoring.
* :class:`RWMRewardFn`: ``(obs, acts, next_obs, dones) -> (N,) np.ndarray``, the signature of reward functions in
  ``imitation`` (``RewardVecEnvWrapper``) and similar tools. It needs no scene: the model's inputs are a subset of
  the env's observation, so make the env with ``obs_keys=RWMRewardFn.OBS_KEYS`` (bev, ego, instruction, agents,
  map) or a superset. The reward of an action is computed from ``obs`` (the observation the action was chosen in;
  in the plan-once env ``next_obs`` already belongs to the next scene after the auto-reset). Actions are decoded
  like the env's action type: ``"trajectory"`` (Box(24) in [-1, 1], ``irlvla_gym.plans.codec.action_to_plan``)
  or ``"vocabulary"`` (index into the K-entry vocabulary). Non-finite actions get reward 0, as in the envs.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from irlvla_gym.cache import LRU
from reward_models.checkpoint import SHIPPED_DIR, resolve_checkpoint
from reward_models.model import OBS_ENTRIES, OBS_KEYS, RewardWorldModel

DEFAULT_CHECKPOINT = SHIPPED_DIR / "default"


@functools.lru_cache(maxsize=8)
def _cached_model(path: str) -> RewardWorldModel:
    return RewardWorldModel.from_pretrained(path)


def load_model(path: str | Path | None = None) -> RewardWorldModel:
    """A model from a checkpoint directory or the name of a shipped checkpoint (``"default"``, ``"policy_aware"``;
    :func:`reward_models.checkpoint.resolve_checkpoint`; None = the shipped default); cached per path, in eval mode."""
    return _cached_model(str(resolve_checkpoint(path)))


def load_default() -> RewardWorldModel:
    """The shipped default checkpoint (``reward_models/checkpoints/default``)."""
    return load_model(None)


class SceneRewardFn:
    """``(scene, plan) -> float`` reward for the envs (module docs).

    Args:
        checkpoint: checkpoint directory or shipped name ("policy_aware"); None = the shipped default.
        cache_size: scene encodings kept (LRU), keyed by scene token and ego state.
    """

    def __init__(self, checkpoint: str | Path | None = None, cache_size: int = 64):
        from irlvla_gym.obs.registry import ObservationBuilder

        self.model = load_model(checkpoint)
        self.builder = ObservationBuilder(OBS_KEYS)
        self._cache: LRU[Any] = LRU(cache_size)

    def _key(self, scene) -> str:
        e = scene.ego
        h = hashlib.blake2b(digest_size=8)
        for a in (e.history, e.history_velocity, e.history_acceleration):
            h.update(np.ascontiguousarray(a, np.float64).tobytes())
        return f"{scene.token}:{h.hexdigest()}"

    @torch.no_grad()
    def encode(self, scene):
        return self._cache.get(self._key(scene), lambda: self.model.encode_scene(self.builder.observe(scene)))

    @property
    def cache_size(self) -> int:
        """Scene encodings kept (LRU)."""
        return self._cache.size

    def clear_cache(self) -> None:
        """Drop the cached scene encodings (call it after changing the model's weights)."""
        self._cache.clear()

    @torch.no_grad()
    def score(self, scene, plans: np.ndarray) -> np.ndarray:
        """Rewards (K,) of plans (K, 8, 3) in ``scene``."""
        plans = np.asarray(plans, np.float32).reshape(-1, 8, 3)
        return self.model.score(self.encode(scene), plans).reward[0].numpy().astype(np.float64)

    def __call__(self, scene, plan: np.ndarray) -> float:
        return float(self.score(scene, plan)[0])


def make_env_reward(argument: str | None = None, *, cache_size: int = 64) -> SceneRewardFn:
    """The env reward ``"rwm"`` (``argument`` None: the shipped default) or ``"rwm:<argument>"`` (a shipped name such as
    ``"policy_aware"``, or a checkpoint directory). Registered as the ``rwm`` entry point of ``irlvla_gym.rewards``,
    which is how the envs find it without importing this package."""
    if argument is None and not (DEFAULT_CHECKPOINT / "config.json").is_file():
        raise FileNotFoundError(f"reward='rwm' needs the shipped reward world model at {DEFAULT_CHECKPOINT}; train it "
                                "(irlvla rwm train) or pass reward=rwm:<checkpoint dir> (--set reward=rwm:DIR)")
    return SceneRewardFn(argument, cache_size=cache_size)


def env_reward(spec: str) -> SceneRewardFn:
    """The env reward of a spec string ``"rwm"`` or ``"rwm:<shipped name or checkpoint dir>"``."""
    from irlvla_gym.rewards import parse_reward

    parsed = parse_reward(spec)
    if parsed.name != "rwm":
        raise ValueError(f"reward must be 'rwm' or 'rwm:<shipped name or checkpoint dir>', got {spec!r}")
    return make_env_reward(parsed.argument)


class RWMRewardFn:
    """Batched reward function ``(obs, acts, next_obs, dones) -> (N,) float32`` (module docs).

    Args:
        checkpoint: checkpoint directory or shipped name ("policy_aware"); None = the shipped default.
        action_type: ``"trajectory"`` or ``"vocabulary"`` (the env's ``action_type``).
        vocabulary_size: K of the vocabulary for ``action_type="vocabulary"``.
    """

    OBS_KEYS = OBS_KEYS
    """Observation keys the env must provide (``gym.make(..., obs_keys=RWMRewardFn.OBS_KEYS)``)."""

    def __init__(self, checkpoint: str | Path | None = None, action_type: str = "trajectory",
                 vocabulary_size: int = 256):
        from irlvla_gym.plans.codec import make_action_type

        self.model = load_model(checkpoint)
        self.actions = make_action_type(action_type, vocabulary_size)

    def plans(self, acts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 8, 3) plans and (N,) validity of a batch of actions."""
        acts = np.asarray(acts)
        n = len(acts)
        plans = np.zeros((n, 8, 3))
        valid = np.ones(n, bool)
        for i in range(n):
            d = self.actions.decode(acts[i])
            valid[i] = not d.invalid
            if valid[i]:
                plans[i] = d.plan
        return plans, valid

    @torch.no_grad()
    def __call__(self, obs: Mapping[str, np.ndarray], acts: np.ndarray, next_obs: Any = None,
                 dones: Any = None) -> np.ndarray:
        missing = [k for k in OBS_ENTRIES if k not in obs]
        if missing:
            raise KeyError(f"RWMRewardFn needs observation entries {list(OBS_ENTRIES)}; missing {missing}. Make the "
                           f"env with obs_keys={list(OBS_KEYS)} (or a superset)")
        plans, valid = self.plans(acts)
        batch = {k: np.asarray(obs[k]) for k in OBS_ENTRIES}
        reward = self.model.predict_reward(batch, plans[:, None].astype(np.float32))[:, 0]
        return np.where(valid, reward, 0.0).astype(np.float32)


__all__ = ["DEFAULT_CHECKPOINT", "load_model", "load_default", "SceneRewardFn", "RWMRewardFn", "env_reward",
           "make_env_reward"]
