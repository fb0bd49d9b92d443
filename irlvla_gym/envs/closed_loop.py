"""``IRLVLA-Navsim-ClosedLoop-v2``: replan every 0.5 s, the ego executes the first 0.5 s of each plan."""

from __future__ import annotations

import numpy as np

from irlvla_gym.envs.base import NavsimBaseEnv
from irlvla_gym.envs.core import HISTORY_ROWS, trace_length
from irlvla_gym.envs.modes import ROUTE_END_MARGIN, ClosedLoop
from irlvla_gym.envs.scoring import STEPS_PER_REPLAN

__all__ = ["HISTORY_ROWS", "ROUTE_END_MARGIN", "NavsimClosedLoopEnv"]  # the constants' old import path


class NavsimClosedLoopEnv(NavsimBaseEnv):
    """
    ## Description

    Closed-loop driving through one scene (IRL-VLA, arXiv 2508.06571): every 0.5 s the agent outputs a 4 s plan in
    its *current* ego frame; the ego executes the first 0.5 s of it through the LQR tracker and kinematic bicycle
    (``irlvla_gym.sim.simulate_plans`` from the current simulated state, the state 5 steps later becomes the new
    state); the other agents replay the log (``traffic="log"``) or follow the IDM and react to the driven ego
    (``traffic="idm"``); the observation is rebuilt at the new pose and time.

    ## Action Space

    As ``IRLVLA-Navsim-v2``: ``Box(-1, 1, (24,), float32)`` (8 poses at t + 0.5 .. t + 4 s in the ego frame at the
    current time t, fixed scaling of :mod:`irlvla_gym.plans.codec`) or ``Discrete(K)`` (trajectory vocabulary).
    Out-of-range actions are clipped (``info["clipped_action"]``); an action with NaN/inf entries (or a bad
    vocabulary index) is *invalid*: the ego executes the action with non-finite entries replaced by 0 (for a
    vocabulary index: the "stay" plan of zeros, i.e. brake), the step's reward and sub-scores are 0 and
    ``info["invalid_action"] = True``.

    ## Observation Space

    As ``IRLVLA-Navsim-v2`` (``obs_keys``, default ``("bev", "ego", "instruction")``), built from the simulated
    state: ego pose and time for the BEV/camera/vectors, simulated velocity/acceleration and driven history for
    ``ego``, and the command recomputed from the route at the current pose. With ``traffic="idm"`` the agents seen
    are the IDM agents.

    ## Rewards

    Per step, the EPDMS of the current plan scored from the current state (``reward="epdms"``): the 4 s plan is
    simulated from the current state and its 41 states are scored against the agents of t .. t + 4 s (beyond the
    4 s log: constant velocity), the lights of that window, the driven 1.5 s history (HC) and the previous plan
    (EC, from the second step on; EPDMS then divides by 16). EP is relative to the logged expert's progress from t0;
    the human filter uses the expert's t0 evaluation. Details: :mod:`irlvla_gym.envs.scoring`. ``info["rewards"]``
    holds every component. A callable reward receives ``(scene, plan)`` with the scene re-expressed in the current
    ego frame at time t (:func:`irlvla_gym.envs.scoring.scene_at`). ``reward="rwm"`` raises (not available yet).

    ## Starting State

    The logged ego state at t0 of a scene drawn with ``self.np_random`` (or ``options={"scene_index": i}`` /
    ``{"token": ...}``).

    ## Episode End

    * Termination: an at-fault collision (NAVSIM's NC rules) or a corner of the ego leaving the drivable area
      during the executed 0.5 s (``info["collision"]``, ``info["off_road"]``).
    * Truncation: after 8 replans (t = 4 s, the end of the logged scene) or when less than 0.5 m of the route is
      left (``info["end_of_log"]``, ``info["end_of_route"]``).

    ## Arguments

    Same as ``IRLVLA-Navsim-v2`` (``scenes``, ``split``, ``num_scenes``, ``obs_keys``, ``obs_config``,
    ``action_type``, ``vocabulary_size``, ``reward``, ``traffic``, ``human_filter``, ``scene_cache_size``,
    ``render_mode``, ``render_size``; or a ``config`` dict).

    >>> import gymnasium as gym, irlvla_gym
    >>> env = gym.make("IRLVLA-Navsim-ClosedLoop-v2", num_scenes=2, obs_keys=("ego",))
    >>> obs, info = env.reset(seed=0)
    >>> obs, reward, terminated, truncated, info = env.step(env.unwrapped.expert_action())
    >>> info["time"]
    0.5

    ## Rendering

    ``"rgb_array"``: BEV picture at the current pose with the last plan (yellow), the driven path (white) and the
    step's scores; ``"human"``: the same in a matplotlib window.

    ## Vectorized environment

    Works under gymnasium's Sync/AsyncVectorEnv and SB3's DummyVecEnv/SubprocVecEnv. Native batched version:
    ``gym.make_vec("IRLVLA-Navsim-ClosedLoop-v2", num_envs=N, vectorization_mode="vector_entry_point")`` gives
    :class:`~irlvla_gym.envs.vector.NavsimClosedLoopVectorEnv` (one tracker call, one multi-scene scorer call and one
    batched render per vector step; same numbers as N single envs; SAME_STEP autoreset by default), and
    ``irlvla_gym.envs.sb3.BatchedVecEnv("IRLVLA-Navsim-ClosedLoop-v2", N)`` is its SB3 VecEnv.

    ## Version History

    * v2: first version.
    """

    mode_class = ClosedLoop

    @property
    def time(self) -> float:
        """Seconds since the scene's t0."""
        return int(self.state.k[0]) * STEPS_PER_REPLAN * 0.1

    @property
    def trace(self) -> np.ndarray:
        """(S, 11) driven states at 0.1 s from t = -1.5 s (the logged history, then the t0 state, then the executed
        states) through the current state, in the scene's t0 frame (a copy)."""
        return self.state.trace[0, :trace_length(int(self.state.k[0]))].copy()

    @property
    def ego_state(self) -> np.ndarray:
        """(11,) current simulated ego state in the scene's t0 frame (``irlvla_gym.sim.StateIndex`` columns)."""
        return self.state.trace[0, trace_length(int(self.state.k[0])) - 1].copy()

    @property
    def driven_states(self) -> np.ndarray:
        """(S, 11) states driven so far at 0.1 s, from t0 (the t0 state first)."""
        return self.state.trace[0, HISTORY_ROWS:trace_length(int(self.state.k[0]))].copy()

    @property
    def previous_states(self) -> np.ndarray | None:
        """(41, 11) the previous plan's simulated states (scored by EC at the next step); None at t0."""
        return self.state.prev_states[0].copy() if self.state.has_prev[0] else None

    @property
    def agent_tracks(self) -> tuple[np.ndarray, np.ndarray]:
        """The agents scored against: (76, A, 8) boxes and (76, A) valid over 0.1 s steps from t0 (log replay
        extended at constant velocity, or the IDM rollout of the last step)."""
        return self.state.boxes[0], self.state.valid[0]
