"""``IRLVLA-Navsim-ClosedLoop-v2``: replan every 0.5 s, the ego executes the first 0.5 s of each plan."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from irlvla_gym.envs.base import NavsimBaseEnv
from irlvla_gym.envs.scoring import (
    MAX_REPLANS, NUM_STATES, STEPS_PER_REPLAN, context_at, expert_future, extend_track, route_remaining, scene_at,
    score_dict, score_states, window, zero_scores,
)
from irlvla_gym.obs.common import EgoStatus
from irlvla_gym.scenes.geometry import to_global, to_local
from irlvla_gym.scenes.scene import Agents, route_command, wrap_angle

ROUTE_END_MARGIN = 0.5  # m of route left at which the episode truncates
HISTORY_ROWS = 15  # 0.1 s states before t0 in the driven trace (t = -1.5 .. -0.1 s)


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

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self._trace = np.zeros((0, 11))
        self._k = 0
        self._prev_states: np.ndarray | None = None
        self._boxes = self._valid = None
        self._obs_scene = None
        self._last_plan_world: np.ndarray | None = None
        self._last_scores: dict[str, float] | None = None
        self._instruction = ""

    # ---- state -------------------------------------------------------------------------------------------------

    @property
    def time(self) -> float:
        """Seconds since the scene's t0."""
        return self._k * STEPS_PER_REPLAN * 0.1

    @property
    def ego_state(self) -> np.ndarray:
        """(11,) current simulated ego state in the scene's t0 frame (``irlvla_gym.sim.StateIndex`` columns)."""
        return self._trace[-1].copy()

    @property
    def driven_states(self) -> np.ndarray:
        """(S, 11) states driven so far at 0.1 s, from t0 (the t0 state first)."""
        return self._trace[HISTORY_ROWS:].copy()

    def expert_action(self):
        """The action encoding the logged expert's plan re-expressed from the current pose (beyond the 4 s log:
        :func:`irlvla_gym.envs.scoring.expert_future`)."""
        if self._bundle is None:
            raise RuntimeError("call reset() first")
        fut = expert_future(self._bundle, self._k)
        pose = self._trace[-1, :3]
        plan = np.empty((8, 3))
        plan[:, :2] = to_local(fut[:, :2], pose[:2], float(pose[2]))
        plan[:, 2] = wrap_angle(fut[:, 2] - pose[2])
        return self.plan_to_action(plan)

    def _tracks(self) -> tuple[np.ndarray, np.ndarray]:
        b = self._bundle
        if "log_ext" not in b.extras:
            b.extras["log_ext"] = extend_track(b.log_agents.boxes, b.log_agents.valid)
        return b.extras["log_ext"]

    def _observe(self) -> dict[str, np.ndarray]:
        b = self._bundle
        if self._k == 0:
            obs, self._instruction = self._cached_t0_observation(b)
            return obs
        state = self._trace[-1]
        pose = state[:3]
        rows = len(self._trace) - 1 - np.arange(3, -1, -1) * STEPS_PER_REPLAN
        route = b.ctx.route_centerline
        speed = float(np.hypot(state[3], state[4]))
        command = (route_command(to_local(route, pose[:2], float(pose[2])), max(4.0 * speed, 10.0))
                   if len(route) >= 2 else b.scene.command)
        status = EgoStatus(state[3:5].copy(), state[5:7].copy(), self._trace[rows, :3].copy(), int(command))
        scene = self._obs_scene if self._obs_scene is not None else b.scene
        self._instruction = self.obs_builder.instruction_text(scene, pose, self.time, status)
        return self.obs_builder.observe(scene, pose, self.time, status)

    # ---- gym API -----------------------------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        index = self._select_index(options)
        b = self._bundle = self.get_bundle(index)
        self._trace = np.vstack([b.ctx.history_states, b.start_state[None]])
        self._k = 0
        self._prev_states = None
        self._boxes, self._valid = self._tracks()
        self._obs_scene = None
        self._last_plan_world, self._last_scores = None, None
        obs = self._observe()
        return obs, {"token": b.scene.token, "scene_index": index, "instruction": self._instruction, "time": 0.0}

    def step(self, action):
        if self._bundle is None:
            raise RuntimeError("call reset() before step()")
        from irlvla_gym.sim import simulate_idm_agents, simulate_plans

        b = self._bundle
        decoded = self.decode_action(action)
        plan = decoded.plan
        state = self._trace[-1]
        pose = state[:3]
        plan_world = np.empty_like(plan)
        plan_world[:, :2] = to_global(plan[:, :2], pose[:2], float(pose[2]))
        plan_world[:, 2] = wrap_angle(plan[:, 2] + pose[2])
        states = simulate_plans(state[None], plan_world[None])  # (1, 41, 11), t .. t + 4 s
        step0 = self._k * STEPS_PER_REPLAN

        if self.config.traffic == "idm":
            # Agents react to the ego driven so far plus this plan; the rollout restarts from t0 each replan, so the
            # past is reproduced exactly (the IDM is causal) and the window ahead reacts to the current plan.
            ego_t0 = np.concatenate([self._trace[HISTORY_ROWS:], states[0, 1:]])[:NUM_STATES]
            track = simulate_idm_agents(b.scene, ego_t0[None])
            self._boxes, self._valid = extend_track(track.boxes[0], track.valid[0])
        agents = window(self._boxes, self._valid, b.log_agents.category, step0)
        ctx = context_at(b, step0, self._trace[-HISTORY_ROWS - 1:-1])
        result = score_states(b, states, agents, previous_states=self._prev_states,
                              human_filter=self.config.human_filter, ctx=ctx)
        executed = slice(0, STEPS_PER_REPLAN + 1)
        collision = bool(result.at_fault_collision[0, executed].any())
        off_road = bool(result.non_drivable[0, executed].any())
        if decoded.invalid:
            reward, scores = 0.0, zero_scores()
        elif self.reward_fn is not None:
            view = scene_at(b, step0, self._trace, self._boxes, self._valid)
            reward = float(self.reward_fn(view, plan))
            scores = {"custom": reward, **score_dict(result)}
        else:
            scores = score_dict(result)
            reward = scores["epdms"]

        self._trace = np.vstack([self._trace, states[0, 1:STEPS_PER_REPLAN + 1]])
        self._prev_states = states
        self._k += 1
        if self.config.traffic == "idm":
            samples = np.arange(9) * STEPS_PER_REPLAN
            ag = b.scene.agents
            self._obs_scene = dataclasses.replace(
                b.scene, agents=Agents(self._boxes[samples], self._valid[samples], ag.category, ag.track_id),
                validate=False)
        end_of_log = self._k >= MAX_REPLANS
        end_of_route = route_remaining(b, self._trace[-1, :2]) < ROUTE_END_MARGIN
        terminated = collision or off_road
        truncated = (end_of_log or end_of_route) and not terminated
        self._last_plan_world, self._last_scores = plan_world, scores
        obs = self._observe()
        info = {"token": b.scene.token, "scene_index": b.index, "instruction": self._instruction,
                "rewards": scores, "invalid_action": decoded.invalid, "clipped_action": decoded.clipped,
                "plan": plan.copy(), "time": self.time, "collision": collision, "off_road": off_road,
                "end_of_log": end_of_log, "end_of_route": end_of_route}
        return obs, float(reward), terminated, truncated, info

    def _frame(self) -> np.ndarray:
        b = self._bundle
        scene = self._obs_scene if self._obs_scene is not None else b.scene
        return self._renderer.frame(scene, self._trace[-1, :3], self.time, plan_world=self._last_plan_world,
                                    path_world=self._trace[HISTORY_ROWS:, :3], scores=self._last_scores,
                                    title=f"{b.scene.token} t={self.time:.1f}s  {self._instruction}")
