"""``IRLVLA-Navsim-Residual-v2``: ``IRLVLA-Navsim-v2`` with defaults that work with an RL library's defaults."""

from __future__ import annotations

from typing import Any, Mapping

from irlvla_gym.envs.config import EnvConfig
from irlvla_gym.envs.navsim_env import NavsimEnv
from irlvla_gym.envs.vector import NavsimVectorBase

RESIDUAL_ENV_DEFAULTS: dict[str, Any] = {"action_type": "residual", "obs_keys": ("compact",), "flatten_obs": True}
"""The defaults that differ from ``IRLVLA-Navsim-v2``'s (explicit kwargs and ``config`` entries override them)."""


class NavsimResidualEnv(NavsimEnv):
    """
    ## Description

    The plan-once NAVSIM v2 task of ``IRLVLA-Navsim-v2`` (same scenes, simulator, EPDMS reward, episode of one
    step; every keyword argument of it works here) with the action and observation chosen so that a Stable-Baselines3
    algorithm with its defaults learns something, naming only the env id and the policy::

        import gymnasium as gym, irlvla_gym
        from stable_baselines3 import DQN, SAC
        SAC("MlpPolicy", "IRLVLA-Navsim-Residual-v2").learn(8_192)     # also PPO, A2C, TD3
        DQN("MlpPolicy", gym.make("IRLVLA-Navsim-Residual-v2", action_type="vocabulary")).learn(8_192)

    Why (measured with ``IRLVLA-Navsim-v2``): SB3's default exploration in the 24-d plan box (std 1) gives EPDMS
    0.015 on average (95 % of plans score 0) while the all-zeros action (stand still) scores 0.648, so PPO / A2C end
    near reward 0; and SAC / TD3 / DQN allocate a 1M-transition replay buffer of (8, 128, 128) BEV observations
    (122 GiB) and crash.

    ## Action Space

    ``Box(-1.0, 1.0, (4,), float32)`` (``action_type="residual"``, :mod:`irlvla_gym.plans.residual`): coefficients
    of four smooth changes applied to a *reference plan that already drives*, so the action 0 drives and every
    action in the box is a drivable plan:

    | index | direction  | at action -1 / +1       | what it does                                                 |
    |-------|------------|-------------------------|--------------------------------------------------------------|
    | 0     | `lon_acc`  | -3.0 / +1.0 m/s^2       | brake / speed up along the path (never backwards)           |
    | 1     | `lon_jerk` | -1.0 / +0.3 m/s^3       | brake / speed up later in the plan                           |
    | 2     | `lat_acc`  | -0.1 / +0.1 m/s^2       | drift right / left of the path (0.8 m at 4 s at most)        |
    | 3     | `lat_jerk` | -0.05 / +0.05 m/s^3     | drift right / left later (0.53 m at 4 s at most)             |

    The reference (``residual_reference``): ``"route"`` (default) keeps the current speed along NAVSIM's route
    centreline (the one the scorer's progress and lane keeping use), blending in from the ego's offset;
    ``"constant_velocity"`` is NAVSIM's constant-velocity agent (straight on). Linear on each side of 0; braking
    reaches further than speeding up (NAVSIM's comfort bounds are -4.05 / +2.40 m/s^2). ``env.unwrapped
    .reference_plan()`` is the plan of action 0, ``decode_action`` / ``plan_to_action`` convert (the latter by
    least squares). ``action_type="vocabulary"`` (``Discrete(256)``, for DQN) and ``"trajectory"`` work too.

    Scales chosen with ``python -m benchmarks.residual_scales --scenes 100`` (synthetic-train, EP normalised by the
    logged expert as in the env, human filter on; stand still 0.650, logged human 0.995):

    | reference x scale | action 0 | uniform samples (> 0) | std-1 clipped samples (> 0) | expert refit |
    |---|---:|---:|---:|---:|
    | route x1 (default) | 0.826 | 0.816 (90 %) | 0.785 (87 %) | 0.980 |
    | route x2 | 0.826 | 0.680 (82 %) | 0.622 (78 %) | 0.981 |
    | constant velocity x1 | 0.686 | 0.718 (80 %) | 0.715 (81 %) | 0.863 |

    (The action 0 itself scores > 0 in 85 % of these scenes; "expert refit": the expert plan's least-squares
    residual action, clipped, decoded and scored: what the parameterisation can express.)

    ## Observation Space

    ``Box(-10, 10, (126,), float32)``: the ``compact`` feature vector (:mod:`irlvla_gym.obs.compact`: ego speed /
    acceleration / command, the route centreline ahead and the ego's offset from it, speed limit, distances to the
    next red / yellow light on the route, the lead agent's gap and speed, the 8 nearest agents), flattened
    (``obs_keys=("compact",)``, ``flatten_obs=True``). A 1M-transition SB3 replay buffer of it is 1.0 GB (obs and
    next obs, float32). Other ``obs_keys`` work (``flatten_obs=False`` for a Dict).

    ## Rewards, Starting State, Episode End, Arguments

    As ``IRLVLA-Navsim-v2`` (:class:`~irlvla_gym.envs.navsim_env.NavsimEnv`): reward EPDMS in [0, 1], one step per
    episode, scenes of ``synthetic-train`` by default; plus ``residual_reference`` and ``flatten_obs``.

    ## SB3 defaults benchmark

    `python -m benchmarks.sb3_defaults --budget 8192 --scenes 100 --seed 0` (and `--seed 1`): each algorithm with
    SB3's defaults, naming only the env id and `"MlpPolicy"` (DQN: `gym.make("IRLVLA-Navsim-Residual-v2",
    action_type="vocabulary")`), 8,192 env steps on synthetic-train, then its deterministic policy scored with the env's
    EPDMS (EP relative to the logged expert) on the first 100 synthetic-val scenes. Shared 2-core box, load average
    3.6-3.9 (other jobs running), a prebuilt synthetic-train store with persisted bundles (`IRLVLA_CACHE` pointing at
    it); 399 s / 348 s for the whole run:

    | algorithm (SB3 defaults) | policy | budget (env steps) | EPDMS seed 0 / seed 1 | learn wall s (seed 0) |
    |---|---|---:|---:|---:|
    | PPO | MlpPolicy | 8,192 | **0.968** / **0.966** | 37 |
    | A2C | MlpPolicy | 8,192 | **0.910** / **0.877** | 38 |
    | SAC | MlpPolicy | 8,192 | **0.968** / **0.969** | 148 |
    | TD3 | MlpPolicy | 8,192 | **0.944** / **0.948** | 142 |
    | DQN | MlpPolicy (``action_type="vocabulary"``) | 8,192 | **0.806** / **0.734** | 22 |
    | stand-still |  |  | 0.653 |  |
    | constant velocity |  |  | 0.736 |  |
    | reference (residual action 0) |  |  | 0.836 |  |
    | best constant action (``lon_jerk`` -0.75) |  |  | 0.917 |  |
    | logged human |  |  | 0.999 |  |

    Every algorithm beats standing still (the logged human scores 0.999 in this protocol). Read with care: EPDMS here
    rewards slowing down (fewer collisions and red lights for a little progress), so the best *constant* action (brake
    late, `lon_jerk` -0.75, chosen on 100 synthetic-train scenes) already scores 0.917; PPO, SAC and TD3 beat it, A2C
    does not, DQN on the 256-plan vocabulary stays below the residual reference. At 4,096 steps TD3 can still sit in a
    corner of the box (seed 1: 0.719, all four actions saturated) and DQN scores 0.702-0.806; with 100 scenes a mean
    has a standard error of ~2-3 points.

    ## Vectorized environment

    ``gym.make_vec("IRLVLA-Navsim-Residual-v2", num_envs=N, vectorization_mode="vector_entry_point")`` gives
    :class:`NavsimResidualVectorEnv`; ``irlvla_gym.envs.sb3.BatchedVecEnv("IRLVLA-Navsim-Residual-v2", N)`` for SB3.

    ## Version History

    * v2: first version (NAVSIM v2 scoring, as ``IRLVLA-Navsim-v2``).
    """

    def __init__(self, *, config: Mapping[str, Any] | EnvConfig | None = None, **kwargs: Any):
        if not isinstance(config, EnvConfig):
            config = {**RESIDUAL_ENV_DEFAULTS, **(dict(config) if config else {})}
        super().__init__(config=config, **kwargs)


class NavsimResidualVectorEnv(NavsimVectorBase):
    """N ``IRLVLA-Navsim-Residual-v2`` envs stepped in one batch (see :mod:`irlvla_gym.envs.vector`)."""

    env_class = NavsimResidualEnv


__all__ = ["NavsimResidualEnv", "NavsimResidualVectorEnv", "RESIDUAL_ENV_DEFAULTS"]
