"""Env wrappers for using the VLA policy with Stable-Baselines3.

SB3 transposes channels-last images to channels-first with ``VecTransposeImage`` and asserts that *every* image
entry of a Dict space is channels-last. The IRL-VLA envs mix both layouts (``camera`` (H, W, 3), ``bev`` (8, H, W)),
so an env observing both must hand SB3 a channels-first camera: wrap it with :class:`ChannelsFirstCamera`
(rl-zoo3: ``env_wrapper: irlvla_gym.policies.wrappers.ChannelsFirstCamera``). The VLA network reads either layout.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np


class ChannelsFirstCamera(gym.ObservationWrapper):
    """Transpose the ``camera`` entry of a Dict observation from (H, W, 3) to (3, H, W) (other keys unchanged).

    >>> import irlvla_gym
    >>> env = ChannelsFirstCamera(gym.make("IRLVLA-Navsim-v2", num_scenes=1, obs_keys=("camera", "bev")))
    >>> env.observation_space["camera"].shape
    (3, 128, 256)
    """

    def __init__(self, env: gym.Env, key: str = "camera"):
        super().__init__(env)
        space = env.observation_space
        if not isinstance(space, gym.spaces.Dict) or key not in space.spaces:
            raise ValueError(f"ChannelsFirstCamera needs a Dict observation space with a {key!r} entry")
        box = space.spaces[key]
        self.key = key
        spaces = dict(space.spaces)
        spaces[key] = gym.spaces.Box(np.moveaxis(box.low, -1, 0), np.moveaxis(box.high, -1, 0),
                                     dtype=box.dtype)
        self.observation_space = gym.spaces.Dict(spaces)

    def observation(self, observation: dict[str, Any]) -> dict[str, Any]:
        out = dict(observation)
        out[self.key] = np.ascontiguousarray(np.moveaxis(observation[self.key], -1, 0))
        return out


__all__ = ["ChannelsFirstCamera"]
