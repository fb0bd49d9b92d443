"""Reward world model (IRL-VLA stage 2): a learned, fast stand-in for the EPDMS scorer.

* :mod:`reward_models.dataset`: candidate plans per scene labelled by the scorer (``irlvla rwm dataset``).
* :mod:`reward_models.model`: :class:`RewardWorldModel` (scene tokens, plan tokens attending to them, one head per
  sub-score, EPDMS-shaped reward).
* :mod:`reward_models.train`: supervised + maximum-entropy IRL training (``irlvla rwm train``).
* :mod:`reward_models.evaluate`: the fidelity report (``irlvla rwm eval``).
* :mod:`reward_models.reward_fn`: :func:`load_default`, the env reward (``reward="rwm"``) and :class:`RWMRewardFn`.

See ``reward_models/README.md`` for commands and numbers. Importing this package imports torch.
"""

from reward_models.checkpoint import CheckpointError
from reward_models.model import ModelConfig, RewardWorldModel
from reward_models.reward_fn import DEFAULT_CHECKPOINT, RWMRewardFn, SceneRewardFn, env_reward, load_default, load_model

__all__ = ["CheckpointError", "ModelConfig", "RewardWorldModel", "DEFAULT_CHECKPOINT", "RWMRewardFn",
           "SceneRewardFn", "env_reward", "load_default", "load_model"]
