"""Two-stage pseudo-simulation (NAVSIM v2 navhard) on synthetic scenes: stage-2 scenes and the aggregation.

**What NAVSIM does.** navhard pairs every stage-1 scene (a real log frame) with several stage-2 scenes: frames 4 s
later in which the ego has been moved to perturbed start states around plausible stage-1 endpoints (sensor data
re-synthesised from those poses), the other agents replayed from the log. A plan is scored in its stage-1 scene; the
agent then plans again in every stage-2 scene; stage-2 scores are weighted by how close each stage-2 start lies to the
agent's own stage-1 endpoint: ``w = exp(-d^2 / (2 * 0.1))`` (d in m), normalised (uniform when all are ~0). Group
score = stage-1 EPDMS x weighted mean of stage-2 EPDMS; final = mean over groups (``epdms.md``).

**What we do (re-anchoring, no new data).** A synthetic scene holds the world from t = -1.5 s to 4 s. For each
stage-1 scene, :func:`stage_two_scenes` builds one stage-2 scene per :class:`StartPerturbation` (default
:data:`DEFAULT_PERTURBATIONS`, M = 5):

1. **Start state**: the expert's 4 s pose shifted ``longitudinal`` / ``lateral`` metres along / across its heading and
   turned by ``heading`` rad; speed = expert speed at 4 s (last 0.5 s displacement / 0.5 s) x ``speed_scale``,
   acceleration = the expert's last speed change / 0.5 s.
2. **Frame**: everything is re-expressed in the ego frame of that start pose (rear axle), i.e. stage-1 t = 4 s
   becomes the stage-2 t0.
3. **Ego history** (t = -1.5 .. 0 s): the expert's poses at stage-1 t = 2.5 .. 4 s relative to its 4 s pose
   (positions scaled by ``speed_scale``), so the history ends at the perturbed start as if the car had driven the
   expert's last 1.5 s shifted rigidly; body-frame velocities/accelerations from finite differences.
4. **Agents** (t0 .. 4 s = stage-1 4 .. 8 s): the scene ends at stage-1 4 s, so the next 4 s are simulated once,
   non-reactively to the ego: vehicles on lanes drive on with the IDM along their lanes (``irlvla_gym.sim``
   ``simulate_idm_agents``, stopping at red lights), everything else (pedestrians, cyclists off-lane, static objects)
   moves on at its 4 s velocity. Boxes are kept at 0.5 s, like a log.
5. **Map**: the same lanes and polygons in the new frame; traffic lights hold their 4 s state for the whole stage-2
   horizon (the scene has no later light samples). The route keeps its lanes; the command is recomputed from it.
6. **Expert future** (for the human filter, and what the ``human`` agent returns in stage 2): no log exists from a
   perturbed start, so PDM-Closed's plan from the stage-2 start stands in for it. Consequence: on the two-stage table
   the ``human`` row's stage-2 part equals PDM-Closed's.
7. **Validity**: a perturbation whose start box overlaps an agent box at t0 is dropped (NAVSIM filters invalid
   synthetic starts too); a group without valid stage-2 scenes keeps its stage-1 score alone.

Deviations from navhard, honestly: our stage-2 agents beyond 4 s are simulated (IDM / constant velocity), not logged;
lights are frozen; the starts are a fixed 5-point pattern around the *expert* endpoint rather than a learned
distribution of plausible endpoints; the stage-2 "human" is PDM-Closed.

Aggregation: :func:`stage_two_weights` (the weights) and :func:`irlvla_gym.metrics.two_stage_score` (the final
number); :func:`aggregate_two_stage` applies both to leaderboard records.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from irlvla_gym.scenes.geometry import to_global, to_local, transform_boxes
from irlvla_gym.scenes.geometry import transform_map as scene_transform_map
from irlvla_gym.scenes.scene import (
    DT, NUM_FUTURE, NUM_HISTORY, NUM_TIMES, Agents, EgoState, MapData, Scene, concat_polylines,
    route_command, wrap_angle,
)

WEIGHT_VARIANCE = 0.1
"""m^2, the variance of NAVSIM's Gaussian stage-2 weight exp(-d^2 / (2 * variance))."""


@dataclass(frozen=True)
class StartPerturbation:
    """A stage-2 start relative to the expert's 4 s state.

    Attributes:
        name: short label (part of the stage-2 token).
        longitudinal: m along the expert's 4 s heading (+ ahead).
        lateral: m across it (+ left).
        heading: rad added to the expert's 4 s heading.
        speed_scale: factor on the expert's 4 s speed (and history length).
    """

    name: str
    longitudinal: float = 0.0
    lateral: float = 0.0
    heading: float = 0.0
    speed_scale: float = 1.0


DEFAULT_PERTURBATIONS: tuple[StartPerturbation, ...] = (
    StartPerturbation("on-expert"),
    StartPerturbation("behind", longitudinal=-2.0, speed_scale=0.8),
    StartPerturbation("ahead", longitudinal=2.0, speed_scale=1.1),
    StartPerturbation("left", lateral=0.75, heading=0.1),
    StartPerturbation("right", lateral=-0.75, heading=-0.1),
)
"""Five starts: on the expert endpoint, 2 m behind (slower), 2 m ahead (faster), 0.75 m left / right turned
outward by 0.1 rad. Spacing ~0.75-2 m keeps the Gaussian weights (sigma 0.32 m) informative for plans that end near
the expert, and uniform for plans that end far from all of them."""


@dataclass
class StageTwoScene:
    """One stage-2 scene with where it starts.

    Attributes:
        scene: the re-anchored scene (its own t0 frame).
        start: (3,) start pose [x, y, yaw] in the stage-1 t0 frame.
        perturbation: the perturbation that made it.
    """

    scene: Scene
    start: np.ndarray
    perturbation: StartPerturbation


# --------------------------------------------------------------------------------------------------------------------
# Scene re-anchoring
# --------------------------------------------------------------------------------------------------------------------


def transform_map(mp: MapData, pose: np.ndarray, light_step: int | None = None) -> MapData:
    """The map in the frame of ``pose`` (3,) (given in the map's current frame); with ``light_step`` every light
    sample is set to the state at that step (lights held)."""
    lights = None
    if light_step is not None:
        state = mp.lane_light_state[min(light_step, len(mp.lane_light_state) - 1)]
        lights = np.repeat(state[None], len(mp.lane_light_state), axis=0)
    return scene_transform_map(mp, pose, lights)


def expert_kinematics_at_end(scene: Scene) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Expert poses (9, 3) at stage-1 t = 0 .. 4 s, speeds (9,) and longitudinal accelerations (9,) at those times.

    Speeds: t0 from the scene; later ones the displacement over the preceding 0.5 s / 0.5 s. Accelerations: the
    speed change over the preceding 0.5 s / 0.5 s (t0 from the scene).
    """
    poses = np.concatenate([np.zeros((1, 3)), np.asarray(scene.ego.future, np.float64)])
    step = np.linalg.norm(np.diff(poses[:, :2], axis=0), axis=1) / DT
    speeds = np.r_[scene.ego.speed, step]
    accel = np.r_[float(scene.ego.acceleration[0]), np.diff(speeds) / DT]
    return poses, speeds, accel


def _start_pose(end: np.ndarray, p: StartPerturbation) -> np.ndarray:
    xy = to_global(np.array([p.longitudinal, p.lateral]), end[:2], float(end[2]))
    return np.array([xy[0], xy[1], float(wrap_angle(end[2] + p.heading))])


def _ego_overlaps_agents(boxes: np.ndarray, valid: np.ndarray, scene_vehicle) -> bool:
    """Whether the ego box at the origin (rear axle, heading 0) overlaps any valid agent box (N, 8)."""
    from shapely.geometry import Polygon

    from irlvla_gym.sim.geometry import agent_corners, ego_corners

    if not np.any(valid):
        return False
    ego = Polygon(ego_corners(np.zeros((1, 11)), scene_vehicle)[0])
    corners = agent_corners(boxes[valid])
    return any(ego.intersects(Polygon(c)) for c in corners)


def _future_agents(temp: Scene) -> tuple[np.ndarray, np.ndarray]:
    """Agent boxes (9, N, 8) / valid (9, N) over the stage-2 horizon: IDM on lanes, constant velocity otherwise."""
    from irlvla_gym.sim import simulate_idm_agents

    if len(temp.agents) == 0:
        return temp.agents.boxes, temp.agents.valid
    track = simulate_idm_agents(temp, None)
    boxes = np.asarray(track.boxes)[0]  # (41, N, 8)
    valid = np.asarray(track.valid)[0]
    ratio = int(round(DT / 0.1))
    samples = np.arange(NUM_TIMES) * ratio
    return boxes[samples], valid[samples] & temp.agents.valid


def stage_two_scene(scene: Scene, perturbation: StartPerturbation, planner: Any = None) -> StageTwoScene | None:
    """The stage-2 scene of ``scene`` for one start perturbation (module docs), or None when the start overlaps an
    agent. ``planner``: the PDM-Closed instance whose plan becomes the expert future (default: the shared one)."""
    from irlvla_gym.planners import default_planner

    planner = planner if planner is not None else default_planner("log")
    poses, speeds, accel = expert_kinematics_at_end(scene)
    end = poses[-1]
    start = _start_pose(end, perturbation)
    scale = float(perturbation.speed_scale)

    # Ego history: the expert's last 1.5 s relative to its 4 s pose, re-attached at the start (scaled by speed).
    k = np.arange(NUM_TIMES - NUM_HISTORY, NUM_TIMES)  # stage-1 t = 2.5, 3, 3.5, 4 s
    hist = np.empty((NUM_HISTORY, 3))
    hist[:, :2] = to_local(poses[k, :2], end[:2], float(end[2])) * scale
    hist[:, 2] = wrap_angle(poses[k, 2] - end[2])
    hist[-1] = 0.0
    hist_vel = np.stack([speeds[k] * scale, np.zeros(NUM_HISTORY)], axis=1)
    hist_acc = np.stack([accel[k] * scale, np.zeros(NUM_HISTORY)], axis=1)

    # Agents at stage-1 4 s in the start frame, extrapolated at constant velocity (the IDM replaces lane vehicles).
    last_boxes = transform_boxes(scene.agents.boxes[-1], start)  # (N, 8)
    last_valid = np.asarray(scene.agents.valid[-1], bool)
    if _ego_overlaps_agents(last_boxes, last_valid, scene.ego.vehicle):
        return None
    t = np.arange(NUM_TIMES, dtype=np.float64)[:, None] * DT
    cv_boxes = np.repeat(last_boxes[None], NUM_TIMES, axis=0)
    cv_boxes[..., 0] += last_boxes[None, :, 6] * t
    cv_boxes[..., 1] += last_boxes[None, :, 7] * t
    cv_valid = np.repeat(last_valid[None], NUM_TIMES, axis=0)
    cv_boxes[~cv_valid] = 0.0

    new_map = transform_map(scene.map, start, light_step=NUM_TIMES - 1)
    route = concat_polylines([new_map.lane_centerlines[int(i)] for i in scene.route_lanes])
    command = route_command(route, max(4.0 * speeds[-1] * scale, 10.0)) if len(route) >= 2 else scene.command
    placeholder = np.zeros((NUM_FUTURE, 3))  # replaced by PDM-Closed's plan below
    ego = EgoState(hist, hist_vel, hist_acc, placeholder, scene.ego.vehicle)
    token = f"{scene.token}~s2-{perturbation.name}"
    meta = dataclasses.replace(scene.metadata, token=token)
    agents = Agents(cv_boxes, cv_valid, scene.agents.category, scene.agents.track_id)
    temp = Scene(meta, ego, agents, new_map, scene.route_lanes, int(command), {}, validate=False)
    boxes, valid = _future_agents(temp)
    boxes = np.where(valid[..., None], boxes, 0.0)
    agents = Agents(boxes, valid, scene.agents.category, scene.agents.track_id)
    draft = Scene(meta, ego, agents, new_map, scene.route_lanes, int(command), {}, validate=False)
    future = np.asarray(planner.run(draft, planner.context(draft)).plan, np.float64)
    final_ego = dataclasses.replace(ego, future=future)
    final = Scene(meta, final_ego, agents, new_map, scene.route_lanes, int(command), {})
    return StageTwoScene(final, start, perturbation)


def stage_two_scenes(scene: Scene, perturbations: Sequence[StartPerturbation] = DEFAULT_PERTURBATIONS,
                     planner: Any = None) -> list[StageTwoScene]:
    """The valid stage-2 scenes of ``scene`` (one per perturbation whose start is free), in perturbation order."""
    out = []
    for p in perturbations:
        s2 = stage_two_scene(scene, p, planner)
        if s2 is not None:
            out.append(s2)
    return out


# --------------------------------------------------------------------------------------------------------------------
# Aggregation
# --------------------------------------------------------------------------------------------------------------------


def stage_two_weights(endpoint: np.ndarray, starts: np.ndarray, variance: float = WEIGHT_VARIANCE) -> np.ndarray:
    """Normalised weights (M,) of stage-2 scenes starting at ``starts`` (M, 2) for a stage-1 plan ending at
    ``endpoint`` (2,): exp(-d^2 / (2 variance)) / sum, uniform when the sum is ~0 (as ``two_stage_score``)."""
    starts = np.asarray(starts, np.float64).reshape(-1, 2)
    if len(starts) == 0:
        return np.zeros(0)
    d2 = np.sum((starts - np.asarray(endpoint, np.float64)[:2]) ** 2, axis=-1)
    w = np.exp(-d2 / (2.0 * variance))
    return w / w.sum() if w.sum() > 1e-12 else np.full(len(starts), 1.0 / len(starts))


def aggregate_two_stage(stage1: Sequence[float], endpoints: Sequence[np.ndarray],
                        stage2_scores: Sequence[Sequence[float]], stage2_starts: Sequence[np.ndarray],
                        variance: float = WEIGHT_VARIANCE) -> float:
    """Final two-stage EPDMS over groups (thin wrapper over :func:`irlvla_gym.metrics.two_stage_score`).

    Args:
        stage1: (G,) stage-1 EPDMS.
        endpoints: G stage-1 plan endpoints (2,) in the stage-1 t0 frame.
        stage2_scores: G lists of stage-2 EPDMS.
        stage2_starts: G arrays (M_g, 2) of stage-2 start positions in the stage-1 t0 frame.
    """
    from irlvla_gym.metrics import two_stage_score

    if len(stage1) == 0:
        return float("nan")
    ends = np.asarray([np.asarray(e, np.float64)[:2] for e in endpoints]).reshape(-1, 2)
    return two_stage_score(np.asarray(stage1, np.float64), ends,
                           [np.asarray(s, np.float64) for s in stage2_scores],
                           [np.asarray(s, np.float64).reshape(-1, 2) for s in stage2_starts], variance)


__all__ = [
    "DEFAULT_PERTURBATIONS", "StageTwoScene", "StartPerturbation", "WEIGHT_VARIANCE", "aggregate_two_stage",
    "expert_kinematics_at_end", "stage_two_scene", "stage_two_scenes", "stage_two_weights", "transform_boxes",
    "transform_map",
]
