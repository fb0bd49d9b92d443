"""Reward world model (IRL-VLA stage 2): a learned, fast stand-in for the EPDMS scorer.

* :mod:`reward_models.dataset`: candidate plans per scene labelled by the scorer (``irlvla rwm dataset``).
* :mod:`reward_models.model`: :class:`RewardWorldModel` (scene tokens, plan tokens attending to them, one head per
  sub-score, EPDMS-shaped reward).
* :mod:`reward_models.train`: supervised + maximum-entropy IRL training (``irlvla rwm train``).
* :mod:`reward_models.evaluate`: the fidelity report (``irlvla rwm eval``).
* :mod:`reward_models.real`: real windows: leave-one-source-out training and the synthetic / real fidelity table
  (``irlvla rwm loso``, ``irlvla rwm eval-real``).
* :mod:`reward_models.reward_fn`: :func:`load_default`, the env reward (``reward="rwm"``) and :class:`RWMRewardFn`.

See ``reward_models/README.md`` for commands and numbers. The names below are imported on first use, so that
``import reward_models`` (and ``irlvla --help``) does not import torch.
"""

from __future__ import annotations

from irlvla_gym.utils import lazy_exports

_EXPORTS = {
    "CheckpointError": "reward_models.checkpoint",
    "ModelConfig": "reward_models.model",
    "RewardWorldModel": "reward_models.model",
    "DEFAULT_CHECKPOINT": "reward_models.reward_fn",
    "RWMRewardFn": "reward_models.reward_fn",
    "SceneRewardFn": "reward_models.reward_fn",
    "env_reward": "reward_models.reward_fn",
    "load_default": "reward_models.reward_fn",
    "load_model": "reward_models.reward_fn",
    "make_env_reward": "reward_models.reward_fn",
}

__all__ = list(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
