"""``IRLVLA-Navsim-v2``: plan once per scene, scored by the EPDMS scorer (or another reward provider)."""

from __future__ import annotations

import numpy as np

from irlvla_gym.envs.base import NavsimBaseEnv
from irlvla_gym.envs.modes import PlanOnce
from irlvla_gym.plans.codec import Decoded


class NavsimEnv(NavsimBaseEnv):
    """
    ## Description

    NAVSIM v2-style non-reactive planning on one driving scene per episode (IRL-VLA, arXiv 2508.06571). The agent
    sees the scene at t0 and outputs one 4 s plan; the plan is tracked by the LQR + kinematic-bicycle simulator
    (``irlvla_gym.sim``, 0.1 s steps), the other agents replay the log (``traffic="log"``) or react with the IDM
    (``traffic="idm"``), and the 41 simulated states are scored with EPDMS (``irlvla_gym.metrics``). The episode
    ends after this single step.

    ## Action Space

    ``action_type="trajectory"`` (default): ``Box(-1.0, 1.0, (24,), float32)``: 8 poses (x, y, yaw) at t = 0.5 ..
    4 s in the ego frame at t0, flattened, each divided by a fixed per-step scale (x: 10 m per 0.5 s step = 20 m/s,
    y: 3 m per step, yaw: 0.4 rad per step, capped at pi); see :mod:`irlvla_gym.plans.codec` (``action_to_plan``,
    ``plan_to_action``). ``action_type="vocabulary"``: ``Discrete(K)`` over a k-means vocabulary of expert plans
    (K = ``vocabulary_size``, default 256 shipped; see :mod:`irlvla_gym.plans.vocabulary`).
    ``action_type="residual"``: ``Box(-1.0, 1.0, (4,), float32)``, smooth longitudinal / lateral changes around a
    reference plan that drives (action 0: the current speed along the route, ``residual_reference``); see
    :mod:`irlvla_gym.plans.residual` and ``IRLVLA-Navsim-Residual-v2`` (:mod:`irlvla_gym.envs.residual`).

    Out-of-range finite actions are clipped to [-1, 1] (``info["clipped_action"]``). Actions with NaN/inf entries
    (or a vocabulary index outside [0, K)) are not simulated: reward 0, every sub-score 0,
    ``info["invalid_action"] = True``. No action ever raises, so a vector env keeps running.

    ## Observation Space

    ``Dict`` with the entries of the chosen ``obs_keys`` (default ``("bev", "ego", "instruction")``), built by
    :mod:`irlvla_gym.obs` at the ego's t0 pose (shapes for the default ``ObsConfig``):

    | key           | shape         | dtype   | meaning                                                 | units       |
    |---------------|---------------|---------|---------------------------------------------------------|-------------|
    | `bev`         | (8, 128, 128) | uint8   | ego-centred raster: drivable, lanes, route, vehicles,   | 0.5 m/pixel |
    |               |               |         | pedestrians/static, past agents, red lights, ego        |             |
    | `ego`         | (21,)         | float32 | velocity, acceleration, command one-hot, 4 past poses   | m/s, m, rad |
    | `instruction` | (32,)         | int64   | token ids of the natural-language instruction           | -           |
    | `camera`      | (128, 256, 3) | uint8   | front camera (real CAM_F0 or rendered)                  | -           |
    | `agents`      | (32, 14)      | float32 | agent vectors (+ `agents_mask` (32,) uint8)             | m, m/s, rad |
    | `map`         | (64, 20, 11)  | float32 | map polylines (+ `map_mask` (64,) uint8)                | m           |
    | `compact`     | (126,)        | float32 | driving features (:mod:`irlvla_gym.obs.compact`)        | scaled      |

    ## Rewards

    ``reward="epdms"`` (default): the plan's EPDMS in [0, 1] = NC * DAC * DDC * TLC * (5 EP + 5 TTC + 2 LK + 2 HC)
    / 14 with NAVSIM v2's human filter (``human_filter``), EP relative to the logged expert's progress (see
    :mod:`irlvla_gym.envs.scoring`). It equals ``irlvla_gym.metrics.score_plans(scene, plan, traffic=traffic,
    human_filter=human_filter, reference_progress=env.unwrapped.reference_progress).epdms[0]``.
    ``info["rewards"]`` holds every component (``nc, dac, ddc, tlc, ep, ttc, lk, hc, ec, epdms, pdms, progress``),
    highway-env style. ``reward="rwm"``: the learned reward world model (:mod:`reward_models`, the shipped default
    checkpoint; ``"rwm:<checkpoint dir>"`` for another). A callable ``reward(scene, plan) -> float``
    (plan (8, 3) in the scene's ego frame) replaces the scorer; then ``info["rewards"] = {"custom": value}``.

    ## Starting State

    A scene drawn uniformly with ``self.np_random`` from the env's scenes (seeded by ``reset(seed=...)``), or the
    one chosen with ``options={"scene_index": i}`` / ``options={"token": "synthetic-train-00042"}``.

    ## Episode End

    Always terminates after one step (``terminated=True``, ``truncated=False``).

    ## Arguments

    Keyword arguments (or one ``config`` dict / :class:`~irlvla_gym.envs.config.EnvConfig`; kwargs win):
    ``scenes`` (split name [default "synthetic-train"], store path, SceneStore or list of Scene), ``split``,
    ``num_scenes`` (pool of the first N scenes), ``obs_keys``, ``obs_config`` (ObsConfig or dict), ``action_type``,
    ``vocabulary_size``, ``reward``, ``traffic`` ("log" | "idm"), ``human_filter``, ``scene_cache_size``,
    ``render_mode`` ("rgb_array" | "human"), ``render_size``, ``flatten_obs`` (one float32 Box instead of the Dict),
    ``residual_reference`` ("route" | "constant_velocity").

    >>> import gymnasium as gym, irlvla_gym
    >>> env = gym.make("IRLVLA-Navsim-v2", num_scenes=4, obs_keys=("ego",))
    >>> obs, info = env.reset(seed=0)
    >>> obs, reward, terminated, truncated, info = env.step(env.unwrapped.expert_action())
    >>> terminated, 0.0 <= reward <= 1.0
    (True, True)

    Scenes of a split are generated on first use (~30 ms each; a store prebuilt with
    ``python -m irlvla_gym.scenes.source --build synthetic-train`` is used when present) and each scene's
    precomputation (scoring context, agents, expert rollout, t0 observation) is kept in an LRU of
    ``scene_cache_size`` entries, so revisiting a scene costs only the simulation and scoring of the plan.

    ## Rendering

    ``"rgb_array"``: (H, W, 3) uint8 BEV picture with the plan (yellow) and its scores (works with
    ``gymnasium.wrappers.RecordVideo``); ``"human"``: the same picture in a matplotlib window.

    ## Vectorized environment

    Works under ``gymnasium.vector.SyncVectorEnv`` / ``AsyncVectorEnv`` and SB3's ``DummyVecEnv`` /
    ``SubprocVecEnv``. Every step ends an episode, so use ``autoreset_mode=gym.vector.AutoresetMode.SAME_STEP``
    (with the default NEXT_STEP mode every other vector step is spent on autoresets). The envs of one process share
    the per-scene precompute. Fastest: ``gym.make_vec("IRLVLA-Navsim-v2", num_envs=N,
    vectorization_mode="vector_entry_point")`` gives the native :class:`~irlvla_gym.envs.vector.NavsimVectorEnv`:
    one tracker call, one multi-scene scorer call and one gather of cached observations per vector step for all N
    envs (same observations, rewards and infos as N single envs; SAME_STEP autoreset by default,
    ``autoreset_mode=`` NEXT_STEP / DISABLED). For SB3: ``irlvla_gym.envs.sb3.BatchedVecEnv`` (one process) or
    ``irlvla_gym.envs.sb3.make_vec_env(..., processes=2)`` (worker processes each holding a batched env).
    ``benchmarks/vector_env.py`` measures them against SyncVectorEnv / DummyVecEnv / SubprocVecEnv.

    ## Version History

    * v2: first version (NAVSIM v2 scoring: EPDMS with EC/TTC/LK/DDC/TLC and the human filter).
    """

    mode_class = PlanOnce

    @property
    def reference_progress(self) -> float:
        """EP reference of the current scene (m): the logged expert's progress x multiplicative product."""
        if self.state.bundles[0] is None:
            raise RuntimeError("call reset() first")
        return self.state.bundles[0].reference_progress

    def finish_step(self, decoded: Decoded, states: np.ndarray | None):
        """Score a decoded action whose plan was already simulated (``states`` (1, 41, 11) from this scene's t0
        state; None to simulate here) and return the step tuple (``step`` is ``finish_step(decode_action(a),
        None)``)."""
        return self._step_decoded(decoded, states)
