"""irlvla-gym: Gymnasium environments, a reward world model and PPO baselines re-implementing IRL-VLA (arXiv 2508.06571)
on NAVSIM v2-shaped driving scenes."""

from irlvla_gym.envs.registration import register_envs
from irlvla_gym.scenes.scene import Scene

register_envs()  # registers "IRLVLA-Navsim-v2" and "IRLVLA-Navsim-ClosedLoop-v2" (strings only; no heavy imports)

__version__ = "0.1.0"
__all__ = ["Scene", "__version__"]
