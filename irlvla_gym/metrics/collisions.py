"""No at-fault collision (NC) and time to collision (TTC) over packed rows x agents.

NC (NAVSIM ``PDMScorer._calculate_no_at_fault_collision``, ``pdm_scorer_utils.get_collision_type``): every step an
ego box overlaps a valid agent box is classified (stopped ego -> not at fault; stopped / static track -> at fault;
agent behind -> not at fault; front bumper touches -> at fault; else lateral, at fault only while the ego straddles
lanes or leaves the drivable area). Vehicles / pedestrians / bicycles score 0, static objects 0.5; an agent is
ignored after a *not-at-fault* contact.

TTC (``_calculate_ttc``): for steps 0 .. 31 with the ego moving, the box is projected 0 / 0.3 / 0.6 / 0.9 s along
its heading at its speed against the agents at t + dt; an overlap is an infraction if the agent is ahead (< 30 deg)
or the ego straddles lanes / is off-road / has its rear axle in an intersection and the agent is not behind;
otherwise the agent is ignored afterwards.

Technique: bounding-circle prefilters, then separating-axis tests on the surviving (row, step, agent) triples; the
"ignored afterwards" rule per (row, agent) is :func:`before_first_fault_free` (a sort, not a loop over steps).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from irlvla_gym.metrics import boxes as B
from irlvla_gym.metrics.agents import AgentRows
from irlvla_gym.metrics.config import ScorerConfig
from irlvla_gym.metrics.result import (
    ACTIVE_FRONT, ACTIVE_LATERAL, ACTIVE_REAR, STOPPED_EGO, STOPPED_TRACK, ScoreResult,
)


class EgoRows(NamedTuple):
    """The ego of R rows over T steps, as the collision family reads it.

    Attributes:
        states: (R, T, 11) simulated states; corners: (R, T, 4, 2) box corners (m); cx, cy: (R, T) box centre (m);
        radius: (R,) bounding-circle radius (m); speed: (R, T) m/s; yaw: (R, T) rad;
        area_flag: (R, T) bool, multiple lanes or non-drivable at the step.
    """

    states: np.ndarray
    corners: np.ndarray
    cx: np.ndarray
    cy: np.ndarray
    radius: np.ndarray
    speed: np.ndarray
    yaw: np.ndarray
    area_flag: np.ndarray


def before_first_fault_free(order: np.ndarray, group: np.ndarray, fault: np.ndarray, num_groups: int) -> np.ndarray:
    """Which events precede their group's first fault-free event (the events NAVSIM still looks at: an agent
    handled without fault is skipped afterwards).

    Args:
        order: (E,) int sort key of each event inside its group (e.g. the step); group: (E,) int in
            [0, num_groups); fault: (E,) bool.

    Returns:
        (E,) bool.
    """
    first_free = np.full(num_groups, np.iinfo(np.int64).max)
    free = ~fault
    np.minimum.at(first_free, group[free], order[free])
    return order < first_free[group]


def score_nc(res: ScoreResult, ego: EgoRows, agents: AgentRows, cfg: ScorerConfig) -> None:
    """NC into ``res`` (rows = ego rows): ``nc``, ``at_fault_collision`` and the earliest decisive collision's
    ``collision_step`` / ``_agent`` / ``_type`` / ``_category`` (lowest agent index on ties)."""
    row = agents.row
    dx = ego.cx[row] - agents.cx
    dy = ego.cy[row] - agents.cy
    near = (dx * dx + dy * dy <= (ego.radius[row][:, None] + agents.radius) ** 2) & agents.valid  # (A, T)
    a_i, t_i = np.nonzero(near)
    k_i = row[a_i]
    a_corners = agents.corners_at(a_i, t_i)
    hit = B.boxes_overlap(ego.corners[k_i, t_i], a_corners)
    a_i, t_i, k_i, a_corners = a_i[hit], t_i[hit], k_i[hit], a_corners[hit]
    if not len(a_i):
        return
    kind = np.full(len(a_i), ACTIVE_LATERAL)
    centre = np.stack([agents.cx[a_i, t_i], agents.cy[a_i, t_i]], axis=1)
    bearing = np.abs(B.relative_bearing(ego.states[k_i, t_i, :2], ego.yaw[k_i, t_i], centre))
    front = B.segment_box_overlap(ego.corners[k_i, t_i, B.FRONT_LEFT], ego.corners[k_i, t_i, B.FRONT_RIGHT],
                                  a_corners)
    # Later assignments win: NAVSIM's checks run stopped ego, stopped track, behind, front, lateral in that order.
    kind[front] = ACTIVE_FRONT
    kind[bearing > np.deg2rad(cfg.behind_angle_deg)] = ACTIVE_REAR
    kind[agents.stopped[a_i]] = STOPPED_TRACK
    kind[ego.speed[k_i, t_i] <= cfg.collision_stopped_speed] = STOPPED_EGO
    fault = (kind == ACTIVE_FRONT) | (kind == STOPPED_TRACK) | ((kind == ACTIVE_LATERAL) & ego.area_flag[k_i, t_i])
    counted = before_first_fault_free(t_i, a_i, fault, len(row)) & fault
    if not counted.any():
        return
    ck, ct, ca, ckind = k_i[counted], t_i[counted], a_i[counted], kind[counted]
    score = np.where(agents.static[ca], cfg.static_collision_score, 0.0)
    np.minimum.at(res.nc, ck, score)
    res.at_fault_collision[ck, ct] = True
    # Earliest collision that set the score, lowest agent index on ties.
    decisive = score == res.nc[ck]
    ck, ct, ca, ckind = ck[decisive], ct[decisive], ca[decisive], ckind[decisive]
    cn = agents.local[ca]
    order = np.lexsort((cn, ct, ck))
    ck, ct, cn, ca, ckind = ck[order], ct[order], cn[order], ca[order], ckind[order]
    first = np.r_[True, ck[1:] != ck[:-1]]
    res.collision_step[ck[first]] = ct[first]
    res.collision_agent[ck[first]] = cn[first]
    res.collision_type[ck[first]] = ckind[first]
    res.collision_category[ck[first]] = agents.category[ca[first]]


def _ttc_candidates(ego: EgoRows, agents: AgentRows, cfg: ScorerConfig
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(agent, step, projection index, agent step, ego shift (E, 2) m) of the projected-ego / agent pairs whose
    bounding circles meet; a coarse per-(agent, step) reach test first, then the exact circle test per
    projection."""
    T = ego.cx.shape[1]
    Tt = min(cfg.ttc_num_steps, T)
    steps = np.asarray(cfg.ttc_projection_steps)
    S = len(steps)
    row = agents.row
    dx = ego.cx[row, :Tt] - agents.cx[:, :Tt]
    dy = ego.cy[row, :Tt] - agents.cy[:, :Tt]
    reach = (ego.radius[:, None] + ego.speed[:, :Tt] * int(steps.max()) * cfg.dt)[row] + agents.reach
    coarse = (dx * dx + dy * dy <= reach * reach) & (ego.speed[:, :Tt] >= cfg.ttc_stopped_speed)[row]
    a_i, t_i = np.nonzero(coarse)
    a_i, t_i = np.repeat(a_i, S), np.repeat(t_i, S)
    s_i = np.tile(np.arange(S), len(a_i) // S if S else 0)
    ta = t_i + steps[s_i]
    ok = ta < T
    a_i, t_i, s_i, ta = a_i[ok], t_i[ok], s_i[ok], ta[ok]
    ok = agents.valid[a_i, ta]
    a_i, t_i, s_i, ta = a_i[ok], t_i[ok], s_i[ok], ta[ok]
    k_i = row[a_i]
    shift = (ego.speed[k_i, t_i] * steps[s_i] * cfg.dt)[:, None] * np.stack(
        [np.cos(ego.yaw[k_i, t_i]), np.sin(ego.yaw[k_i, t_i])], axis=1)
    d0 = ego.cx[k_i, t_i] + shift[:, 0] - agents.cx[a_i, ta]
    d1 = ego.cy[k_i, t_i] + shift[:, 1] - agents.cy[a_i, ta]
    ok = np.hypot(d0, d1) <= ego.radius[k_i] + agents.radius[a_i, ta]
    return a_i[ok], t_i[ok], s_i[ok], ta[ok], shift[ok]


def score_ttc(res: ScoreResult, ego: EgoRows, agents: AgentRows, cfg: ScorerConfig,
              rear_axle_in_intersection: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> None:
    """TTC into ``res``: ``ttc``, ``ttc_infraction`` and the earliest infraction's ``ttc_step`` / ``ttc_agent``.

    Args:
        rear_axle_in_intersection: (rows (E,), steps (E,)) -> (E,) bool, the rear axle of that row's ego at that
            step lies in an intersection of its scene (asked only where it decides).
    """
    a_i, t_i, s_i, ta, shift = _ttc_candidates(ego, agents, cfg)
    k_i = agents.row[a_i]
    hit = B.boxes_overlap(ego.corners[k_i, t_i] + shift[:, None, :], agents.corners_at(a_i, ta))
    a_i, t_i, s_i, ta, k_i = a_i[hit], t_i[hit], s_i[hit], ta[hit], k_i[hit]
    if not len(a_i):
        return
    centre = np.stack([agents.cx[a_i, ta], agents.cy[a_i, ta]], axis=1)
    bearing = np.abs(B.relative_bearing(ego.states[k_i, t_i, :2], ego.yaw[k_i, t_i], centre))
    ahead = bearing < np.deg2rad(cfg.ahead_angle_deg)
    behind = bearing > np.deg2rad(cfg.behind_angle_deg)
    area = ego.area_flag[k_i, t_i].copy()
    ask = ~area & ~ahead & ~behind  # the intersection test decides these only
    if ask.any():  # NAVSIM tests the rear axle here (the box centre in DDC / LK)
        area[ask] = rear_axle_in_intersection(k_i[ask], t_i[ask])
    infraction = ahead | (area & ~behind)
    S = len(cfg.ttc_projection_steps)
    counted = before_first_fault_free(t_i * S + s_i, a_i, infraction, len(agents.row)) & infraction
    if not counted.any():
        return
    plan, step, agent = k_i[counted], t_i[counted], agents.local[a_i[counted]]
    res.ttc[plan] = 0.0
    res.ttc_infraction[plan, step] = True
    order = np.lexsort((agent, step, plan))
    plan, step, agent = plan[order], step[order], agent[order]
    first = np.r_[True, plan[1:] != plan[:-1]]
    res.ttc_step[plan[first]] = step[first]
    res.ttc_agent[plan[first]] = agent[first]
