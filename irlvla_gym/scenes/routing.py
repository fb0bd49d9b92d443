"""The route as NAVSIM's PDM planner follows it: starting lane, then a Dijkstra search through the lane graph.

A scene's ``route_lanes`` say which lanes (and so which roadblocks = lane groups) the route uses; adapters fill them
from the logged drive, so they may jump sideways into a sibling lane where the driver changed lanes. NAVSIM never
does that: its centreline (``AbstractPDMPlanner._get_discrete_centerline``) starts at the on-route lane under the ego
(``_get_starting_lane``) and follows successor edges through lanes of the route roadblocks, the shortest way (by
centreline length) into the last route roadblock of a 30-block window, or the deepest reachable lane when the graph
ends first (``graph_search/dijkstra.py``). Progress, lane keeping and PDM-Closed all use that centreline, so the
scorer and the planner take the route from :func:`navsim_route_lanes`.

Before that NAVSIM corrects the route's roadblocks (``PDMClosedPlanner`` on its first iteration:
``utils/route_utils.route_roadblock_correction``), and the corrected roadblocks are also what the metric cache calls
on-route (``route_lane_ids``): :func:`navsim_route_blocks`. The ego's roadblock is picked from the roadblocks within
1 m of the rear axle by the *nearest centreline vertex* of their lanes (within 3 m and 45 deg); where the ego's own
lanes have sparse vertices (a straight lane with two vertices 100 m apart) a merging lane whose vertices pass nearby
wins, and NAVSIM's route then starts on that lane (the synthetic "merge" layout).
"""

from __future__ import annotations

import numpy as np
import shapely

from irlvla_gym.geometry import wrap_angle
from irlvla_gym.scenes.scene import Scene

SEARCH_DEPTH = 30
"""Route roadblocks searched ahead of the starting one (``_get_discrete_centerline(search_depth=30)``)."""
PROXIMAL_RADIUS = 1.0
"""[m] roadblocks near the ego (``get_current_roadblock_candidates``: ``get_proximal_map_objects(radius=1.0)``)."""
HEADING_ERROR_THRESH = np.pi / 4
DISPLACEMENT_ERROR_THRESH = 3.0
SEARCH_DEPTH_BACKWARD = 15
SEARCH_DEPTH_FORWARD = 30


def _logged_route_blocks(scene: Scene) -> list[int]:
    """Roadblock keys of ``scene.route_lanes`` in route order (duplicates dropped)."""
    blocks: list[int] = []
    for lane in np.asarray(scene.route_lanes, np.int64):
        b = _block(scene, int(lane))
        if b not in blocks:
            blocks.append(b)
    return blocks


def on_route_lane_mask(scene: Scene, blocks: list[int] | None = None) -> np.ndarray:
    """(L,) bool: the lanes of NAVSIM's (corrected) route roadblocks (``blocks``, default
    :func:`navsim_route_blocks`), NAVSIM's ``route_lane_ids``. Without route lanes: all False."""
    mp = scene.map
    blocks = navsim_route_blocks(scene) if blocks is None else blocks
    keys = np.array([_block(scene, i) for i in range(mp.num_lanes)], np.int64)
    return np.isin(keys, np.asarray(blocks, np.int64)) if blocks else np.zeros(mp.num_lanes, bool)


def _block_graph(scene: Scene) -> tuple[dict[int, list[int]], dict[int, list[int]]]:
    """Roadblock successors and predecessors (from the lane successors; our maps have no separate connector blocks
    between consecutive lane groups, so NAVSIM's BFS depth counts those one deeper)."""
    succ: dict[int, list[int]] = {}
    pred: dict[int, list[int]] = {}
    for a, b in np.asarray(scene.map.lane_successors, np.int64).reshape(-1, 2):
        ba, bb = _block(scene, int(a)), _block(scene, int(b))
        if ba == bb:
            continue
        if bb not in succ.setdefault(ba, []):
            succ[ba].append(bb)
        if ba not in pred.setdefault(bb, []):
            pred[bb].append(ba)
    return succ, pred


def _bfs(start: int, targets: set[int], neighbours: dict[int, list[int]], max_depth: int, forward: bool
         ) -> list[int] | None:
    """NAVSIM's ``BreadthFirstSearchRoadBlock.search``: level by level, no visited set, the parent of (block, depth)
    is the last block that reached it at that depth; the start itself counts at depth 1. Returns the path in
    driving order (forward: start .. target; backward: target .. start) or None."""
    level, depth = [start], 1
    parent: dict[tuple[int, int], int | None] = {(start, 1): None}
    while level and depth <= max_depth:
        nxt: list[int] = []
        for block in level:
            if block in targets:
                path = [block]
                d = depth
                while parent[(path[-1], d)] is not None:
                    path.append(parent[(path[-1], d)])  # type: ignore[arg-type]
                    d -= 1
                return path[::-1] if forward else path
            for n in neighbours.get(block, []):
                nxt.append(n)
                parent[(n, depth + 1)] = block
        level, depth = nxt, depth + 1
    return None


def current_block_candidates(scene: Scene, route_blocks: list[int]) -> tuple[int | None, list[int]]:
    """NAVSIM's ``get_current_roadblock_candidates`` at the t0 rear axle (origin, heading 0): (starting roadblock,
    candidate roadblocks), or (None, []) on a map without lanes.

    Roadblocks whose lanes come within :data:`PROXIMAL_RADIUS` of the rear axle (else the nearest roadblock and the
    nearest connector roadblock); per lane the nearest centreline *vertex* and the heading there; a lane within
    3 m and 45 deg makes its roadblock a candidate (on-route candidates first; the smallest displacement wins); else
    the roadblock with the smallest displacement.
    """
    mp = scene.map
    L = mp.num_lanes
    if not L:
        return None, []
    origin = shapely.Point(0.0, 0.0)
    dist = np.full(L, np.inf)
    for i in range(L):
        ring = np.asarray(mp.lane_polygons.exterior(i), np.float64)
        if len(ring) >= 3:
            gap = np.maximum(np.maximum(ring.min(axis=0), -ring.max(axis=0)), 0.0)  # bounding box to the origin
            if np.hypot(*gap) <= PROXIMAL_RADIUS:
                dist[i] = shapely.Polygon(ring).distance(origin)
    keys = [_block(scene, i) for i in range(L)]
    is_conn = np.asarray(mp.lane_is_connector, bool)
    # Roadblocks first, then roadblock connectors (nuPlan's layer order), each in lane order.
    order = sorted(range(L), key=lambda i: (bool(is_conn[i]), i))
    blocks: list[int] = []
    for i in order:
        if dist[i] <= PROXIMAL_RADIUS and keys[i] not in blocks:
            blocks.append(keys[i])
    if not blocks:  # nearest roadblock and nearest roadblock connector
        for want in (False, True):
            lanes = [i for i in range(L) if bool(is_conn[i]) == want]
            if lanes:
                d = [shapely.Polygon(mp.lane_polygons.exterior(i)).distance(origin)
                     if len(mp.lane_polygons.exterior(i)) >= 3 else np.inf for i in lanes]
                blocks.append(keys[lanes[int(np.argmin(d))]])
    on_route, on_route_err, others, others_err = [], [], [], []
    block_err = []
    route = set(route_blocks)
    for b in blocks:
        best_disp = np.inf
        for i in (i for i in range(L) if keys[i] == b):
            line = np.asarray(mp.lane_centerlines[i], np.float64)
            if len(line) < 2:
                continue
            d = np.sqrt((line ** 2).sum(-1))
            j = int(np.argmin(d))
            h = _heading(line)[j]
            heading_error = abs(float(wrap_angle(h)))
            best_disp = min(best_disp, float(d[j]))
            if heading_error < HEADING_ERROR_THRESH and d[j] < DISPLACEMENT_ERROR_THRESH:
                if b in route:
                    on_route.append(b)
                    on_route_err.append(float(d[j]))
                else:
                    others.append(b)
                    others_err.append(float(d[j]))
        block_err.append(best_disp)
    if on_route:
        return on_route[int(np.argmin(on_route_err))], on_route
    if others:
        return others[int(np.argmin(others_err))], others
    return blocks[int(np.argmin(block_err))], blocks


def navsim_route_blocks(scene: Scene) -> list[int]:
    """The route's roadblock keys (lane groups; ``-(lane + 1)`` for a lane without one) after NAVSIM's
    ``route_roadblock_correction``: when the ego's roadblock (:func:`current_block_candidates`) is off the route,
    prepend the way from it found backwards from the first route roadblock (BFS, depth 15), else replace the route's
    head by the way forward from it to one of the first three route roadblocks (depth 30); then link consecutive
    roadblocks that are not connected (forward BFS, depth 30). NAVSIM's third fix (cutting route loops through
    intersections) is not reproduced."""
    blocks = _logged_route_blocks(scene)
    if not blocks:
        return blocks
    start, candidates = current_block_candidates(scene, blocks)
    if start is None:
        return blocks
    succ, pred = _block_graph(scene)
    if start not in blocks:
        path = _bfs(blocks[0], set(candidates), pred, SEARCH_DEPTH_BACKWARD, forward=False)
        if path is not None:
            blocks = path[:-1] + blocks
        else:
            path = _bfs(start, set(blocks[:3]), succ, SEARCH_DEPTH_FORWARD, forward=True)
            if path is not None:
                end = blocks.index(path[-1])
                blocks = path + blocks[end + 1:]
    out = [blocks[0]]
    for a, b in zip(blocks[:-1], blocks[1:]):
        if a not in pred.get(b, []):
            path = _bfs(a, {b}, succ, SEARCH_DEPTH_FORWARD, forward=True)
            if path is not None and len(path) >= 3:
                out += path[1:-1]
        out.append(b)
    return out


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
        err = abs(float(wrap_angle(h)))
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


def navsim_route_lanes(scene: Scene, blocks: list[int] | None = None) -> np.ndarray:
    """(n,) int64 lane indices of NAVSIM's route centreline (see module docs); empty without route lanes.

    Roadblocks are NAVSIM's corrected route roadblocks (``blocks``, default :func:`navsim_route_blocks`; pass them
    when already computed); candidates are the lanes of those roadblocks; edge cost is the centreline length; ties go
    to the lane queued first, as in NAVSIM's list-based Dijkstra.
    """
    mp = scene.map
    route = np.asarray(scene.route_lanes, np.int64)
    if not len(route):
        return route
    blocks = navsim_route_blocks(scene) if blocks is None else blocks
    on_route = on_route_lane_mask(scene, blocks)
    start = starting_lane(scene, on_route)
    if start < 0:
        return route
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
