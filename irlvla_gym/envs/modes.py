"""The two episode modes of the IRL-VLA envs: the hooks :class:`~irlvla_gym.envs.core.EnvCore`'s step template calls.

* :class:`PlanOnce` (``IRLVLA-Navsim-v2``): one 4 s plan per scene from t0, scored, the episode ends.
* :class:`ClosedLoop` (``IRLVLA-Navsim-ClosedLoop-v2``): every 0.5 s a plan from the current simulated state; the
  ego executes its first 0.5 s, the agents replay the log or react (IDM), the observation is rebuilt.

Every hook acts on the stepped rows ``rows`` ((M,) int) of an :class:`~irlvla_gym.envs.core.EpisodeState`, with one
batched tracker call, one batched scorer call and one batched render for all of them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from irlvla_gym.envs.core import HISTORY_ROWS, Decision, EnvCore, EpisodeState, Scored, trace_length
from irlvla_gym.envs.scoring import (
    MAX_REPLANS, NUM_STATES, STEPS_PER_REPLAN, context_at, expert_future, extend_track, route_remaining, scene_at,
    score_bundle_rows, window,
)
from irlvla_gym.metrics import AgentTracks, agent_tracks
from irlvla_gym.obs.common import EgoStatus
from irlvla_gym.scenes.geometry import to_local
from irlvla_gym.scenes.scene import Agents, Scene, route_command, wrap_angle

ROUTE_END_MARGIN = 0.5  # m of route left at which the closed-loop episode truncates
EXECUTED = slice(0, STEPS_PER_REPLAN + 1)  # states of the executed 0.5 s (t .. t + 0.5 s) in a (41,) simulation


class PlanOnce:
    """Hooks of the plan-once env: the plan is in the t0 ego frame, simulated from t0, scored, and the episode
    terminates. Invalid actions are neither simulated nor scored; with a custom reward nothing is simulated."""

    custom_with_scores = False
    scores_in_place = True
    """A plan's score depends only on the scene at t0: :meth:`EnvCore.rewards_of` may score other plans."""

    def start(self, core: EnvCore, st: EpisodeState, rows: np.ndarray) -> None:
        """Nothing beyond the core's reset: the observation stays the scene's cached t0 one."""

    def decide(self, core: EnvCore, st: EpisodeState, rows: np.ndarray, plans: np.ndarray, invalid: np.ndarray,
               states: np.ndarray | None) -> Decision:
        """Simulate the valid plans from t0 (one tracker call) when the scorer needs them."""
        pos = np.flatnonzero(~invalid)
        if states is None and len(pos) and core.reward.needs_scorer:
            from irlvla_gym.sim import simulate_plans

            # One row (the single env): a view, no stacking.
            start = (st.bundles[rows[0]].start_state[None] if len(rows) == 1 else
                     np.stack([st.bundles[rows[j]].start_state for j in pos]))
            states = simulate_plans(start, plans[pos])
        return Decision(plans, states, pos)

    def score(self, core: EnvCore, st: EpisodeState, rows: np.ndarray, decision: Decision,
              invalid: np.ndarray) -> Scored | None:
        """EPDMS of the simulated rows: one multi-scene scorer call."""
        if decision.states is None or not len(decision.pos) or not core.reward.needs_scorer:
            return None  # a custom reward: states handed to finish_step are not scored
        pos = decision.pos
        bundles = [st.bundles[rows[j]] for j in pos]
        if core.config.traffic == "log":
            agents = [b.log_agents for b in bundles]
        else:
            agents = [agent_tracks(b.scene, "idm", decision.states[r:r + 1]) for r, b in enumerate(bundles)]
        raw, final = score_bundle_rows(bundles, decision.states, agents, human_filter=core.config.human_filter,
                                       pack=core.map_pack)
        return Scored(pos, raw, final)

    def reward_scenes(self, core: EnvCore, st: EpisodeState, rows: np.ndarray) -> list[Scene]:
        """The scenes themselves (plans are in their t0 ego frame)."""
        return [st.bundles[i].scene for i in rows]

    def reward_observations(self, core: EnvCore, st: EpisodeState, rows: np.ndarray,
                            builder: Any) -> list[dict[str, np.ndarray]]:
        """The rows' t0 observations of a reward model's ``builder``, cached with the scenes (and persisted)."""
        return core.t0_observations([st.bundles[i] for i in rows], builder)

    def advance(self, core: EnvCore, st: EpisodeState, rows: np.ndarray, decision: Decision) -> None:
        """Nothing moves: the episode is over after its one plan."""

    def terminated(self, core: EnvCore, st: EpisodeState, rows: np.ndarray,
                   scored: Scored | None) -> tuple[np.ndarray, dict[str, Any]]:
        """Every step terminates."""
        return np.ones(len(rows), bool), {}

    def truncated(self, core: EnvCore, st: EpisodeState, rows: np.ndarray,
                  terminated: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        """Never truncated."""
        return np.zeros(len(rows), bool), {}

    def observe(self, core: EnvCore, st: EpisodeState, rows: np.ndarray) -> None:
        """The observation stays the t0 one (set at reset)."""

    def time_info(self, core: EnvCore, st: EpisodeState, rows: np.ndarray) -> dict[str, Any]:
        """No time in the plan-once infos."""
        return {}

    def expert_plan(self, core: EnvCore, st: EpisodeState, i: int) -> np.ndarray:
        """The logged expert's 4 s plan (8, 3) in the t0 ego frame."""
        return st.bundles[i].scene.ego.future

    def current_state(self, core: EnvCore, st: EpisodeState, i: int) -> np.ndarray:
        """The t0 simulator state (the plan is made there)."""
        return st.bundles[i].start_state

    def frame(self, core: EnvCore, st: EpisodeState, i: int, renderer: Any) -> np.ndarray:
        """The scene at t0 with the last plan (yellow) and its scores."""
        b = st.bundles[i]
        plan = st.last_plan[i] if st.has_plan[i] else None
        return renderer.frame(b.scene, np.zeros(3), 0.0, plan_world=plan, scores=core.last_scores(st, i),
                              title=f"{b.scene.token}  {st.text[i]}")


class ClosedLoop:
    """Hooks of the closed-loop env (module docs; scoring details in :mod:`irlvla_gym.envs.scoring`).

    Per step, for the M rows at once: the plans (current ego frame) go to the t0 frame and are simulated from each
    row's current state (one tracker call); each row's agents (log windows cached per scene and replan, or the IDM
    rollout reacting to the driven ego plus this plan) and time-shifted scoring context feed one scorer call; the
    ego executes 0.5 s; the rows end on an at-fault collision / leaving the drivable area (terminated) or at the end
    of the log / route (truncated); one batched render makes the new observations.
    """

    custom_with_scores = True

    def start(self, core: EnvCore, st: EpisodeState, rows: np.ndarray) -> None:
        """The driven trace starts with the logged 1.5 s history and the t0 state; the agents are the log's."""
        for i in rows:
            b = st.bundles[i]
            st.trace[i, :HISTORY_ROWS] = b.ctx.history_states
            st.trace[i, HISTORY_ROWS] = b.start_state
            st.boxes[i], st.valid[i] = self.log_tracks(b)

    @staticmethod
    def log_tracks(bundle: Any) -> tuple[np.ndarray, np.ndarray]:
        """The scene's log replay extended to 76 steps (constant velocity beyond 4 s), cached in the bundle."""
        if "log_ext" not in bundle.extras:
            bundle.extras["log_ext"] = extend_track(bundle.log_agents.boxes, bundle.log_agents.valid)
        return bundle.extras["log_ext"]

    def decide(self, core: EnvCore, st: EpisodeState, rows: np.ndarray, plans: np.ndarray, invalid: np.ndarray,
               states: np.ndarray | None) -> Decision:
        """Plans to the t0 frame, simulated from the rows' current states (invalid actions too: the ego drives the
        action with non-finite entries zeroed)."""
        from irlvla_gym.sim import simulate_plans

        k = st.k[rows]
        if (k >= MAX_REPLANS).any():
            raise RuntimeError("the episode reached the end of the log (t = 4 s): call reset()")
        current = st.trace[rows, trace_length(k) - 1]  # (M, 11)
        yaw = current[:, 2]
        c, s = np.cos(yaw)[:, None], np.sin(yaw)[:, None]
        world = np.empty_like(plans)  # to_global, row-wise
        world[..., :2] = np.stack([c * plans[..., 0] - s * plans[..., 1], s * plans[..., 0] + c * plans[..., 1]],
                                  axis=-1) + current[:, None, :2]
        world[..., 2] = wrap_angle(plans[..., 2] + yaw[:, None])
        return Decision(world, simulate_plans(current, world), np.arange(len(rows)))

    def window(self, core: EnvCore, st: EpisodeState, i: int, step0: int) -> AgentTracks:
        """Row i's agents over the 41 steps from ``step0``; log windows are cached per scene and step, so the
        scorer's per-agent arrays are prepared once per (scene, replan)."""
        b = st.bundles[i]
        if core.config.traffic != "log":
            return window(st.boxes[i], st.valid[i], b.log_agents.category, step0)
        key = ("window", step0)
        if key not in b.extras:
            b.extras[key] = window(st.boxes[i], st.valid[i], b.log_agents.category, step0)
        return b.extras[key]

    def score(self, core: EnvCore, st: EpisodeState, rows: np.ndarray, decision: Decision,
              invalid: np.ndarray) -> Scored:
        """Every row (termination needs the flags of invalid actions too) in one scorer call."""
        from irlvla_gym.sim import simulate_idm_agents

        k = st.k[rows]
        length = trace_length(k)
        agents, contexts, previous = [], [], []
        for j, i in enumerate(rows):
            b, n, step0 = st.bundles[i], int(length[j]), int(k[j]) * STEPS_PER_REPLAN
            if core.config.traffic == "idm":
                # Agents react to the ego driven so far plus this plan; the rollout restarts from t0 each replan,
                # so the past is reproduced exactly (the IDM is causal) and the window ahead reacts to this plan.
                ego_t0 = np.concatenate([st.trace[i, HISTORY_ROWS:n], decision.states[j, 1:]])[:NUM_STATES]
                track = simulate_idm_agents(b.scene, ego_t0[None])
                st.boxes[i], st.valid[i] = extend_track(track.boxes[0], track.valid[0])
            agents.append(self.window(core, st, i, step0))
            # A copy: the trace rows are rewritten when the row resets, the context must not change with them.
            contexts.append(context_at(b, step0, st.trace[i, n - HISTORY_ROWS - 1:n - 1].copy()))
            previous.append(st.prev_states[i] if st.has_prev[i] else None)
        bundles = [st.bundles[i] for i in rows]
        raw, final = score_bundle_rows(bundles, decision.states, agents, contexts, previous,
                                       human_filter=core.config.human_filter, pack=core.map_pack)
        return Scored(decision.pos, raw, final)

    def reward_observations(self, core: EnvCore, st: EpisodeState, rows: np.ndarray, builder: Any) -> None:
        """None: the current scenes move with the ego, so the reward renders them itself."""
        return None

    def reward_scenes(self, core: EnvCore, st: EpisodeState, rows: np.ndarray) -> list[Scene]:
        """Each row's scene re-expressed in its current ego frame at its current time (:func:`scene_at`)."""
        out = []
        for i in rows:
            k = int(st.k[i])
            out.append(scene_at(st.bundles[i], k * STEPS_PER_REPLAN, st.trace[i, :trace_length(k)], st.boxes[i],
                                st.valid[i]))
        return out

    def advance(self, core: EnvCore, st: EpisodeState, rows: np.ndarray, decision: Decision) -> None:
        """Execute 0.5 s: append the plan's first 5 states to the trace, keep its states for EC, k + 1."""
        start = trace_length(st.k[rows])
        cols = start[:, None] + np.arange(STEPS_PER_REPLAN)
        st.trace[rows[:, None], cols] = decision.states[:, 1:STEPS_PER_REPLAN + 1]
        st.prev_states[rows] = decision.states
        st.has_prev[rows] = True
        st.k[rows] += 1
        if core.config.traffic == "idm":  # the observation shows the simulated agents at the 0.5 s samples
            samples = np.arange(9) * STEPS_PER_REPLAN
            for i in rows:
                scene = st.bundles[i].scene
                ag = scene.agents
                st.obs_scene[i] = dataclasses.replace(
                    scene, agents=Agents(st.boxes[i][samples], st.valid[i][samples], ag.category, ag.track_id),
                    validate=False)

    def terminated(self, core: EnvCore, st: EpisodeState, rows: np.ndarray,
                   scored: Scored | None) -> tuple[np.ndarray, dict[str, Any]]:
        """At-fault collision or a corner off the drivable area during the executed 0.5 s."""
        collision = scored.raw.at_fault_collision[:, EXECUTED].any(axis=1)
        off_road = scored.raw.non_drivable[:, EXECUTED].any(axis=1)
        return collision | off_road, {"collision": collision, "off_road": off_road}

    def truncated(self, core: EnvCore, st: EpisodeState, rows: np.ndarray,
                  terminated: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        """End of the 4 s log, or less than ``ROUTE_END_MARGIN`` of route left (unless terminated)."""
        k = st.k[rows]
        end_of_log = k >= MAX_REPLANS
        last = trace_length(k) - 1
        end_of_route = np.array([route_remaining(st.bundles[i], st.trace[i, n, :2]) < ROUTE_END_MARGIN
                                 for i, n in zip(rows, last)], bool)
        truncated = (end_of_log | end_of_route) & ~terminated
        return truncated, {"end_of_log": end_of_log, "end_of_route": end_of_route}

    def observe(self, core: EnvCore, st: EpisodeState, rows: np.ndarray) -> None:
        """Observations at the rows' new states (all past t0): one batched render (one row: the single call)."""
        builder = core.obs_builder
        scenes, poses, times, statuses = [], [], [], []
        for i in rows:
            b = st.bundles[i]
            k = int(st.k[i])
            trace = st.trace[i, :trace_length(k)]
            state = trace[-1]
            pose = state[:3]
            hist = len(trace) - 1 - np.arange(3, -1, -1) * STEPS_PER_REPLAN
            route = b.ctx.route_centerline
            speed = float(np.hypot(state[3], state[4]))
            command = (route_command(to_local(route, pose[:2], float(pose[2])), max(4.0 * speed, 10.0))
                       if len(route) >= 2 else b.scene.command)
            status = EgoStatus(state[3:5].copy(), state[5:7].copy(), trace[hist, :3].copy(), int(command))
            scene = st.obs_scene[i] if st.obs_scene[i] is not None else b.scene
            time = k * STEPS_PER_REPLAN * 0.1
            st.text[i] = builder.instruction_text(scene, pose, time, status)
            scenes.append(scene)
            poses.append(pose.copy())
            times.append(time)
            statuses.append(status)
        if len(rows) == 1:
            st.obs[rows[0]] = builder.observe(scenes[0], poses[0], times[0], statuses[0])
            return
        batch = builder.observe_batch(scenes, np.stack(poses), np.array(times), statuses)
        for j, i in enumerate(rows):
            st.obs[i] = {k: v[j] for k, v in batch.items()}

    def time_info(self, core: EnvCore, st: EpisodeState, rows: np.ndarray) -> dict[str, Any]:
        """``time``: seconds since t0 (float64 (M,))."""
        return {"time": st.k[rows] * STEPS_PER_REPLAN * 0.1}

    def expert_plan(self, core: EnvCore, st: EpisodeState, i: int) -> np.ndarray:
        """The logged expert's plan from the current time (beyond 4 s: :func:`expert_future`) in the current ego
        frame."""
        k = int(st.k[i])
        fut = expert_future(st.bundles[i], k)
        pose = st.trace[i, trace_length(k) - 1, :3]
        plan = np.empty((8, 3))
        plan[:, :2] = to_local(fut[:, :2], pose[:2], float(pose[2]))
        plan[:, 2] = wrap_angle(fut[:, 2] - pose[2])
        return plan

    def current_state(self, core: EnvCore, st: EpisodeState, i: int) -> np.ndarray:
        """The last state of the driven trace (the t0 state before the first step)."""
        return st.trace[i, trace_length(int(st.k[i])) - 1]

    def frame(self, core: EnvCore, st: EpisodeState, i: int, renderer: Any) -> np.ndarray:
        """The scene at the current pose and time with the last plan (yellow), the driven path (white), scores."""
        b = st.bundles[i]
        k = int(st.k[i])
        trace = st.trace[i, :trace_length(k)]
        time = k * STEPS_PER_REPLAN * 0.1
        scene = st.obs_scene[i] if st.obs_scene[i] is not None else b.scene
        plan = st.last_plan[i] if st.has_plan[i] else None
        return renderer.frame(scene, trace[-1, :3], time, plan_world=plan, path_world=trace[HISTORY_ROWS:, :3],
                              scores=core.last_scores(st, i), title=f"{b.scene.token} t={time:.1f}s  {st.text[i]}")


__all__ = ["EXECUTED", "ROUTE_END_MARGIN", "ClosedLoop", "PlanOnce"]
