"""Agent forecasts for the reward world model's plan features, from the ``agents`` and ``map`` observation entries.

The plan features need where every agent will be at the plan's pose times (t = 0.5 .. 4 s). Two forecasts:

* ``"cv"``, constant velocity: ``xy(t) = xy0 + t * v``. NAVSIM's PDM-Closed forecasts agents this way, and the first
  reward models used it; it sends every agent on a curve or through a turn off its lane.
* ``"lane"``, lane following: a moving vehicle or cyclist is matched to the lane / connector centreline of the ``map``
  entry it is on (nearest segment within 2.5 m whose direction is within ~37 degrees of its velocity) and advanced
  along it at its current speed; at the end of a centreline piece it continues on the piece that starts there
  (within 1 m) and turns least; with no such piece it goes straight on. Agents that are slow (< 1 m/s), off every
  lane, pedestrians or objects keep the constant-velocity forecast. This is the lane graph following that the
  synthetic traffic (IDM along lane chains) and real traffic mostly do; speed changes (braking, queues) are not
  modelled.

Both return, per agent and time, ``[x, y, vx, vy]`` in the observation's ego frame (m, m/s), so the plan features
read the same layout for either. :func:`forecast_agents` runs once per scene (it is part of the scene encoding),
vectorised over the batch in one compiled loop.
"""

from __future__ import annotations

import numba
import numpy as np
import torch

FORECASTS = ("cv", "lane")
AGENT_FORECASTS = (*FORECASTS, "logged")
"""Every ``ModelConfig.agent_forecast``: the two forecasts above, or ``"logged"``, the agents' logged futures read
from the observation's ``agents_future`` entry (``ObsConfig.agents_future = "logged"``: what the rule-based scorer
sees, so the model needs no forecast; a teacher for training, where logs exist, not a runtime predictor)."""
# agents entry layout (irlvla_gym.obs.vectors AGENT_FEATURES): x, y, cos, sin, vx, vy, length, width, is_vehicle,
# is_pedestrian, is_bicycle, is_traffic_cone, is_barrier, is_generic_object
_AG_X, _AG_Y, _AG_VX, _AG_VY, _IS_VEHICLE, _IS_BICYCLE = 0, 1, 4, 5, 8, 10
# map entry layout (MAP_FEATURES): x, y, dx, dy, is_lane, is_connector, ...
_MP_LANE, _MP_CONN = 4, 5

MIN_SPEED = 1.0  # m/s: slower agents keep the constant-velocity forecast
MATCH_DISTANCE = 2.5  # m: an agent this close to a centreline can be on that lane
MATCH_ALIGN = 0.8  # cos of the largest heading difference between the velocity and the centreline (~37 deg)
JOIN_DISTANCE = 1.0  # m: a centreline piece continues another when its first point is this close to the other's end
JOIN_ALIGN = 0.5  # cos: ... and it turns by less than 60 degrees there


@numba.njit(cache=True)
def _lane_forecast_kernel(agents, amask, mp, mmask, times, out):  # pragma: no cover - compiled
    B, N = amask.shape
    P, L = mp.shape[1], mp.shape[2]
    T = times.shape[0]
    for b in range(B):
        for i in range(N):
            x0, y0 = agents[b, i, _AG_X], agents[b, i, _AG_Y]
            vx, vy = agents[b, i, _AG_VX], agents[b, i, _AG_VY]
            for k in range(T):  # constant velocity unless a lane is found below
                out[b, i, k, 0] = x0 + times[k] * vx
                out[b, i, k, 1] = y0 + times[k] * vy
                out[b, i, k, 2] = vx
                out[b, i, k, 3] = vy
            if not amask[b, i]:
                continue
            v = np.hypot(vx, vy)
            if v < MIN_SPEED or (agents[b, i, _IS_VEHICLE] < 0.5 and agents[b, i, _IS_BICYCLE] < 0.5):
                continue
            ux, uy = vx / v, vy / v
            # the lane the agent is on: nearest aligned centreline segment
            best, bp, bj, bu = MATCH_DISTANCE, -1, -1, 0.0
            for p in range(P):
                if not mmask[b, p] or (mp[b, p, 0, _MP_LANE] < 0.5 and mp[b, p, 0, _MP_CONN] < 0.5):
                    continue
                for j in range(L - 1):
                    ax, ay = mp[b, p, j, 0], mp[b, p, j, 1]
                    dx, dy = mp[b, p, j + 1, 0] - ax, mp[b, p, j + 1, 1] - ay
                    seg = np.hypot(dx, dy)
                    if seg < 1e-6 or (dx * ux + dy * uy) < MATCH_ALIGN * seg:
                        continue
                    u = ((x0 - ax) * dx + (y0 - ay) * dy) / (seg * seg)
                    u = min(max(u, 0.0), 1.0)
                    d = np.hypot(x0 - ax - u * dx, y0 - ay - u * dy)
                    if d < best:
                        best, bp, bj, bu = d, p, j, u
            if bp < 0:
                continue
            # walk along the centreline chain; the forecast keeps the agent's lateral offset at 0 (on the centreline)
            p, j = bp, bj
            px = mp[b, p, j, 0] + bu * (mp[b, p, j + 1, 0] - mp[b, p, j, 0])
            py = mp[b, p, j, 1] + bu * (mp[b, p, j + 1, 1] - mp[b, p, j, 1])
            travelled, straight = 0.0, False
            tx, ty = ux, uy
            for k in range(T):
                target = v * times[k]
                while travelled < target:
                    if straight:
                        step = target - travelled
                        px += tx * step
                        py += ty * step
                        travelled = target
                        break
                    ex, ey = mp[b, p, j + 1, 0], mp[b, p, j + 1, 1]
                    dx, dy = ex - px, ey - py
                    rest = np.hypot(dx, dy)
                    seg = np.hypot(mp[b, p, j + 1, 0] - mp[b, p, j, 0], mp[b, p, j + 1, 1] - mp[b, p, j, 1])
                    if seg > 1e-6:
                        tx = (mp[b, p, j + 1, 0] - mp[b, p, j, 0]) / seg
                        ty = (mp[b, p, j + 1, 1] - mp[b, p, j, 1]) / seg
                    if travelled + rest >= target:
                        step = target - travelled
                        if rest > 1e-9:
                            px += dx / rest * step
                            py += dy / rest * step
                        travelled = target
                        break
                    px, py = ex, ey
                    travelled += rest
                    j += 1
                    if j >= L - 1:  # end of this piece: continue on the piece that starts here and turns least
                        nxt, align = -1, JOIN_ALIGN
                        for q in range(P):
                            if q == p or not mmask[b, q] or (mp[b, q, 0, _MP_LANE] < 0.5 and mp[b, q, 0, _MP_CONN] < 0.5):
                                continue
                            if np.hypot(mp[b, q, 0, 0] - px, mp[b, q, 0, 1] - py) > JOIN_DISTANCE:
                                continue
                            qx, qy = mp[b, q, 1, 0] - mp[b, q, 0, 0], mp[b, q, 1, 1] - mp[b, q, 0, 1]
                            qn = np.hypot(qx, qy)
                            if qn < 1e-6:
                                continue
                            a = (qx * tx + qy * ty) / qn
                            if a > align:
                                nxt, align = q, a
                        if nxt < 0:
                            straight = True
                        else:
                            p, j = nxt, 0
                out[b, i, k, 0] = px
                out[b, i, k, 1] = py
                out[b, i, k, 2] = v * tx
                out[b, i, k, 3] = v * ty


def forecast_agents(agents: np.ndarray | torch.Tensor, agents_mask: np.ndarray | torch.Tensor,
                    mp: np.ndarray | torch.Tensor, map_mask: np.ndarray | torch.Tensor, times: np.ndarray,
                    kind: str = "lane") -> np.ndarray:
    """(B, N, T, 4) [x, y, vx, vy] forecasts of the ``agents`` entry (B, N, 14) at ``times`` (T,) s.

    ``kind``: ``"lane"`` (lane following on the ``map`` entry (B, P, L, 11) + ``map_mask`` (B, P)) or ``"cv"``
    (constant velocity). Padding agents (``agents_mask`` (B, N) false) get constant-velocity values of their (zero)
    rows. Raises ValueError for an unknown ``kind``."""
    if kind not in FORECASTS:
        raise ValueError(f"agent forecast must be one of {FORECASTS}, got {kind!r}")
    ag = _np(agents, np.float32)
    t = np.ascontiguousarray(times, np.float32)
    if kind == "cv":
        xy = ag[:, :, None, :2] + t[None, None, :, None] * ag[:, :, None, 4:6]
        v = np.broadcast_to(ag[:, :, None, 4:6], xy.shape)
        return np.concatenate([xy, v], axis=-1).astype(np.float32)
    out = np.empty(ag.shape[:2] + (len(t), 4), np.float32)
    _lane_forecast_kernel(ag, _np(agents_mask, np.bool_), _np(mp, np.float32), _np(map_mask, np.bool_), t, out)
    return out


def forecast_errors(split: str = "synthetic-val", num_scenes: int = 100, min_speed: float = MIN_SPEED
                    ) -> dict[str, dict[str, float]]:
    """Errors of each forecast against the logged futures of the moving agents (speed > ``min_speed``) of the
    first ``num_scenes`` scenes of a synthetic split: per kind, ADE over 0.5 .. 4 s, FDE at 4 s, and at 4 s the
    mean lateral / longitudinal error (relative to the logged heading) and the share more than 1 m off laterally.
    Observation agents are matched to scene agents by their t0 position."""
    from irlvla_gym.obs.common import agents_at_time
    from irlvla_gym.obs.registry import ObservationBuilder
    from irlvla_gym.scenes.synthetic import SPLITS, generate_scene

    spec = SPLITS[split]
    builder = ObservationBuilder(("agents", "map"))
    times = np.arange(1, 9, dtype=np.float32) * 0.5
    err = {k: [] for k in FORECASTS}
    lat = {k: [] for k in FORECASTS}
    lon = {k: [] for k in FORECASTS}
    for s in range(num_scenes):
        scene = generate_scene(spec.first_seed + s, spec.config, spec.name)
        o = builder.observe(scene)
        m = o["agents_mask"].astype(bool)
        ag = o["agents"][m]
        if not m.any():
            continue
        start = agents_at_time(scene, 0.0)[0]
        idx = np.hypot(start[:, None, 0] - ag[None, :, 0], start[:, None, 1] - ag[None, :, 1]).argmin(0)
        logged = [agents_at_time(scene, float(t)) for t in times]
        xy = np.stack([b[idx, :2] for b, _ in logged], 1)  # (n, 8, 2)
        valid = np.stack([v[idx] for _, v in logged], 1) & (np.hypot(ag[:, 4], ag[:, 5]) > min_speed)[:, None]
        yaw = logged[-1][0][idx, 2]
        for kind in FORECASTS:
            f = forecast_agents(o["agents"][None], o["agents_mask"][None], o["map"][None], o["map_mask"][None],
                                times, kind)[0][m, :, :2]
            d = f - xy
            err[kind].append(np.where(valid, np.hypot(d[..., 0], d[..., 1]), np.nan))
            end = valid[:, -1]
            lat[kind].append(np.abs(-d[end, -1, 0] * np.sin(yaw[end]) + d[end, -1, 1] * np.cos(yaw[end])))
            lon[kind].append(np.abs(d[end, -1, 0] * np.cos(yaw[end]) + d[end, -1, 1] * np.sin(yaw[end])))
    out = {}
    for kind in FORECASTS:
        e, la, lo = np.concatenate(err[kind]), np.concatenate(lat[kind]), np.concatenate(lon[kind])
        out[kind] = {"agents": int(len(la)), "ade": float(np.nanmean(e)), "fde": float(np.nanmean(e[:, -1])),
                     "lateral_4s": float(la.mean()), "longitudinal_4s": float(lo.mean()),
                     "lateral_over_1m": float(np.mean(la > 1.0))}
    return out


def _np(x, dtype) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(x, dtype=dtype)


__all__ = ["FORECASTS", "AGENT_FORECASTS", "forecast_agents", "forecast_errors"]
