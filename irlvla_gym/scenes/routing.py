"""The route as NAVSIM's PDM planner follows it: starting lane, then a Dijkstra search through the lane graph.

A scene's ``route_lanes`` say which lanes (and so which roadblocks = lane groups) the route uses; adapters fill them
from the logged drive, so they may jump sideways into a sibling lane where the driver changed lanes. NAVSIM never
does that: its centreline (``AbstractPDMPlanner._get_discrete_centerline``) starts at the on-route lane under the ego
(``_get_starting_lane``) and follows successor edges through lanes of the route roadblocks, the shortest way (by
centreline length) into the last route roadblock of a 30-block window, or the deepest reachable lane when the graph
ends first (``graph_search/dijkstra.py``). Progress, lane keeping and PDM-Closed all use that centreline, so the
scorer and the planner take the route from :func:`navsim_route_lanes`.
"""

from __future__ import annotations

import numpy as np
import shapely

from irlvla_gym.scenes.scene import Scene

SEARCH_DEPTH = 30
"""Route roadblocks searched ahead of the starting one (``_get_discrete_centerline(search_depth=30)``)."""


def on_route_lane_mask(scene: Scene) -> np.ndarray:
    """(L,) bool: route lanes and all lanes sharing a lane group (roadblock) with one of them (NAVSIM's
    ``route_lane_ids``: the lanes of all route roadblocks)."""
    mp = scene.map
    mask = np.zeros(mp.num_lanes, bool)
    route = np.asarray(scene.route_lanes, np.int64)
    mask[route] = True
    groups = mp.lane_group[route]
    groups = groups[groups >= 0]
    if groups.size:
        mask |= np.isin(mp.lane_group, groups)
    return mask


def _heading(line: np.ndarray) -> np.ndarray:
    """Per-vertex heading towards the next vertex, the last one repeated (nuPlan ``compute_linestring_heading``)."""
    h = np.arctan2(np.diff(line[:, 1]), np.diff(line[:, 0]))
    return np.r_[h, h[-1]]


def starting_lane(scene: Scene, on_route: np.ndarray | None = None) -> int:
    """NAVSIM's starting lane (``_get_starting_lane``): among the on-route lanes whose polygon intersects the rear
    axle (the t0 origin), the one with the lowest heading error at its centreline vertex nearest the ego; else the
    on-route lane containing the box centre; else the on-route lane nearest the ego footprint. -1 without on-route
    lanes."""
    on_route = on_route_lane_mask(scene) if on_route is None else on_route
    lanes = np.flatnonzero(on_route)
    if not len(lanes):
        return -1
    polys = [shapely.Polygon(scene.map.lane_polygons.exterior(int(i))) for i in lanes]
    origin = shapely.Point(0.0, 0.0)
    best, best_err = -1, np.inf
    for lane, poly in zip(lanes, polys):
        if not poly.intersects(origin):
            continue
        line = np.asarray(scene.map.lane_centerlines[int(lane)], np.float64)
        if len(line) < 2:
            continue
        h = _heading(line)[int(np.argmin((line ** 2).sum(-1)))]
        err = abs(float(np.arctan2(np.sin(h), np.cos(h))))
        if err < best_err:
            best, best_err = int(lane), err
    if best >= 0:
        return best
    v = scene.ego.vehicle
    centre = shapely.Point(v.rear_axle_to_center, 0.0)
    footprint = shapely.box(-v.rear_length, -0.5 * v.width, v.front_length, 0.5 * v.width)
    closest = np.inf
    for lane, poly in zip(lanes, polys):
        if poly.contains(centre):
            return int(lane)
        dist = poly.distance(footprint)
        if dist < closest:
            best, closest = int(lane), dist
    return best


def _block(scene: Scene, lane: int) -> int:
    """Roadblock key of a lane: its lane group, or -(lane + 1) for a lane without one (its own block)."""
    group = int(scene.map.lane_group[lane])
    return group if group >= 0 else -(lane + 1)


def navsim_route_lanes(scene: Scene) -> np.ndarray:
    """(n,) int64 lane indices of NAVSIM's route centreline (see module docs); empty without route lanes.

    Roadblocks are the lane groups of ``scene.route_lanes`` in route order; candidates are the lanes of those
    roadblocks; edge cost is the centreline length; ties go to the lane queued first, as in NAVSIM's list-based
    Dijkstra.
    """
    mp = scene.map
    route = np.asarray(scene.route_lanes, np.int64)
    if not len(route):
        return route
    on_route = on_route_lane_mask(scene)
    start = starting_lane(scene, on_route)
    if start < 0:
        return route
    blocks: list[int] = []
    for lane in route:
        b = _block(scene, int(lane))
        if b not in blocks:
            blocks.append(b)
    start_block = _block(scene, start)
    first = blocks.index(start_block) if start_block in blocks else 0
    target = blocks[first:first + SEARCH_DEPTH][-1]
    length = np.array([float(np.linalg.norm(np.diff(np.asarray(c, np.float64), axis=0), axis=1).sum())
                       if len(c) > 1 else 0.0 for c in mp.lane_centerlines])
    succ: dict[int, list[int]] = {}
    for a, b in np.asarray(mp.lane_successors, np.int64):
        succ.setdefault(int(a), []).append(int(b))

    # NAVSIM's Dijkstra, list for list: pick the smallest distance (first on ties), stop when the popped lane lies
    # in the target block, else fall back to the deepest expanded lane (smallest distance among those).
    queue, dist, depth, frontier = [start], [1.0], [1], [start]
    parent: dict[int, int | None] = {start: None}
    expanded: list[int] = []
    expanded_dist: list[float] = []
    expanded_depth: list[int] = []
    end = start
    found = False
    while queue:
        d, i = min((v, j) for j, v in enumerate(dist))
        lane, lane_depth = queue[i], depth[i]
        del dist[i], queue[i], frontier[i], depth[i]
        if _block(scene, lane) == target:
            end, found = lane, True
            break
        expanded.append(lane)
        expanded_dist.append(d)
        expanded_depth.append(lane_depth)
        for nxt in succ.get(lane, []):
            if not on_route[nxt]:
                continue
            alt = d + length[nxt]
            if nxt not in expanded and nxt not in frontier:
                parent[nxt] = lane
                queue.append(nxt)
                frontier.append(nxt)
                dist.append(alt)
                depth.append(lane_depth + 1)
            elif nxt in frontier:
                j = frontier.index(nxt)
                if alt < dist[j]:
                    parent[nxt] = lane
                    dist[j] = alt
                    depth[j] = lane_depth + 1
    if not found:
        deepest = max(expanded_depth)
        candidates = [j for j, v in enumerate(expanded_depth) if v == deepest]
        _, j = min((expanded_dist[j], j) for j in candidates)
        end = expanded[j]
    path = [end]
    while parent[path[-1]] is not None:
        path.append(parent[path[-1]])
    return np.asarray(path[::-1], np.int64)
