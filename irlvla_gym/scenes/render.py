"""Bird's-eye-view pictures of a :class:`Scene` (matplotlib, Agg; no pyplot global state).

The view is ego-centred with the ego's heading pointing up: plot x = ego y (left is left, the axis is inverted so
+y is on the left), plot y = ego x (forward). Everything is drawn with collections (one artist per layer), so maps
with thousands of lanes render quickly.

Layers, bottom to top: drivable area (grey), intersections (darker grey), crosswalks (white, striped), lane
boundaries (thin white) and centrelines (thin, dashed for connectors), lanes with a traffic light coloured by their
state at t0, the route (wide translucent blue), agents' faint future centres, agents as oriented boxes coloured by
category with a heading tick and a 1-second velocity arrow, ego history (grey dots), the expert future (green dots),
extra plans, and the ego box.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from irlvla_gym.geometry import box_corners
from irlvla_gym.scenes.scene import (
    AGENT_CATEGORIES, LIGHT_GREEN, LIGHT_RED, LIGHT_YELLOW, PolygonSet, Scene,
)
from irlvla_gym.utils import atomic_write

CATEGORY_COLORS = {
    "vehicle": "#1e88e5",
    "pedestrian": "#fb8c00",
    "bicycle": "#8e24aa",
    "traffic_cone": "#fdd835",
    "barrier": "#6d4c41",
    "generic_object": "#78909c",
}
LIGHT_COLORS = {LIGHT_RED: "#e53935", LIGHT_YELLOW: "#fbc02d", LIGHT_GREEN: "#43a047"}
EGO_COLOR = "#d81b60"
EXPERT_COLOR = "#2e7d32"
HISTORY_COLOR = "#616161"
ROUTE_COLOR = "#1e88e5"
DRIVABLE_COLOR = "#d6d6d6"
INTERSECTION_COLOR = "#c4c4c4"
CROSSWALK_COLOR = "#fafafa"
PLAN_COLORS = ("#00acc1", "#f4511e", "#5e35b1", "#c0ca33", "#6d4c41", "#00897b", "#ec407a", "#3949ab")

DEFAULT_VIEW_RANGE = (-20.0, 60.0, -40.0, 40.0)
"""(x_min, x_max, y_min, y_max) of the view in the ego frame (m): 80 m x 80 m, mostly ahead of the ego."""


def _p(xy: np.ndarray) -> np.ndarray:
    """Ego-frame (..., 2) [x, y] -> plot coordinates (..., 2) [y, x] (heading up; the x axis is inverted)."""
    return np.asarray(xy)[..., ::-1]


def _polygon_path(polys: PolygonSet):
    """One compound matplotlib Path for a PolygonSet: exteriors counter-clockwise, holes clockwise (fills right
    under either fill rule). None when empty."""
    from matplotlib.path import Path as MplPath

    if polys.count == 0:
        return None
    verts, codes = [], []
    for ring, is_hole in zip(polys.rings, polys.ring_is_hole):
        ring = _p(np.asarray(ring, np.float64))
        # Shoelace area sign in plot coordinates; the inverted x axis mirrors the picture but not the fill.
        area = 0.5 * np.sum(ring[:, 0] * np.roll(ring[:, 1], -1) - np.roll(ring[:, 0], -1) * ring[:, 1])
        if (area < 0) != bool(is_hole):
            ring = ring[::-1]
        verts.append(np.vstack([ring, ring[:1]]))
        codes.append(np.r_[MplPath.MOVETO, np.full(len(ring) - 1, MplPath.LINETO), MplPath.CLOSEPOLY])
    return MplPath(np.concatenate(verts), np.concatenate(codes).astype(np.uint8))


def _add_polygons(ax, polys: PolygonSet, zorder: float, **style) -> bool:
    from matplotlib.patches import PathPatch

    path = _polygon_path(polys)
    if path is None:
        return False
    ax.add_patch(PathPatch(path, zorder=zorder, **style))
    return True


def render_scene(
    scene: Scene,
    path: str | os.PathLike | None = None,
    *,
    ax=None,
    plans: np.ndarray | None = None,
    plan_labels: Sequence[str] | None = None,
    title: str | None = None,
    view_range: tuple[float, float, float, float] = DEFAULT_VIEW_RANGE,
    figsize: tuple[float, float] = (10.0, 8.0),
    dpi: int = 100,
    legend: bool = True,
):
    """Draw a bird's-eye view of ``scene``; optionally write it to ``path`` as PNG (atomically).

    Args:
        scene: the scene.
        path: PNG file to write (parent directories are created); None to only return the figure.
        ax: draw into this matplotlib Axes instead of a new figure.
        plans: (K, 8, 3) or (8, 3) extra plans [x, y, yaw] at t = 0.5 .. 4.0 s in the ego frame (m, rad), e.g. a
            policy's candidates, drawn over the expert.
        plan_labels: K legend labels for ``plans`` (default 'plan 0', 'plan 1', ...).
        title: title; default: command and token (plus source and map).
        view_range: (x_min, x_max, y_min, y_max) in the ego frame (m); x is drawn upwards.
        figsize, dpi: size of a new figure in inches and dots per inch (pixels = figsize * dpi); the map takes a
            square on the left, the legend the margin on the right.
        legend: draw a legend of what is shown.

    Returns:
        the matplotlib Figure.
    """
    legend_outside = ax is None
    if ax is None:
        ax = _new_map_axes(figsize, dpi)
    fig = ax.figure
    handles: list = []  # legend entries, in drawing order
    ax.set_facecolor("#f4f4f0")
    _draw_map(ax, scene, handles)
    _draw_agents(ax, scene, handles)
    _draw_ego_and_plans(ax, scene, plans, plan_labels, handles)
    _frame_view(ax, scene, view_range, title)
    if legend:
        where = dict(loc="upper left", bbox_to_anchor=(1.02, 1.0)) if legend_outside else dict(loc="upper right")
        ax.legend(handles=handles, fontsize=8 if legend_outside else 7, framealpha=0.92, handlelength=1.8,
                  **where)

    if path is not None:
        path = os.fspath(path)
        with atomic_write(path, "wb") as fh:
            fig.savefig(fh, format="png", dpi=fig.dpi)
    return fig


def _new_map_axes(figsize: tuple[float, float], dpi: int):
    """Axes of a new Agg figure of ``figsize`` inches at ``dpi``: a square map on the left (aspect is equal), the
    right margin left free for the legend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(fig)
    return fig.add_axes((0.07, 0.06, 0.86 * figsize[1] / figsize[0], 0.86))


def _draw_map(ax, scene: Scene, handles: list) -> None:
    """Map layers (drivable area, intersections, crosswalks, lanes, lights at t0, route); appends legend handles."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    mp = scene.map
    if _add_polygons(ax, mp.drivable_area, 1, facecolor=DRIVABLE_COLOR, edgecolor="#b0b0b0", linewidth=0.6):
        handles.append(Patch(facecolor=DRIVABLE_COLOR, edgecolor="#b0b0b0", label="drivable area"))
    if _add_polygons(ax, mp.intersections, 1.5, facecolor=INTERSECTION_COLOR, edgecolor="none"):
        handles.append(Patch(facecolor=INTERSECTION_COLOR, label="intersection"))
    if _add_polygons(ax, mp.crosswalks, 2, facecolor=CROSSWALK_COLOR, edgecolor="#9e9e9e", hatch="////",
                     linewidth=0.5):
        handles.append(Patch(facecolor=CROSSWALK_COLOR, edgecolor="#9e9e9e", hatch="////", label="crosswalk"))
    if mp.num_lanes:
        _draw_lanes(ax, mp, handles)
    route = scene.route_centerline() if len(scene.route_lanes) else np.zeros((0, 2))
    if len(route) >= 2:
        ax.plot(*_p(route).T, color=ROUTE_COLOR, lw=8, alpha=0.3, solid_capstyle="round", zorder=3.6)
        handles.append(Line2D([], [], color=ROUTE_COLOR, lw=6, alpha=0.3, label="route"))


def _draw_lanes(ax, mp, handles: list) -> None:
    """Lane boundaries (thin white), centrelines (dashed for connectors) and, coloured instead, the centrelines of
    lanes with a traffic light state at t0; appends legend handles. ``mp`` is a :class:`MapData` with lanes."""
    from matplotlib.collections import LineCollection
    from matplotlib.lines import Line2D

    L = mp.num_lanes
    bounds = [_p(b) for b in mp.lane_left_boundaries] + [_p(b) for b in mp.lane_right_boundaries]
    ax.add_collection(LineCollection(bounds, colors="white", linewidths=0.9, zorder=3))
    centers = [_p(c) for c in mp.lane_centerlines]
    light = mp.lane_light_state[0] if mp.lane_light_state.size else np.zeros(L, np.int8)
    plain = [i for i in range(L) if int(light[i]) not in LIGHT_COLORS]
    styles = np.where(mp.lane_is_connector[plain], "--", "-") if plain else []
    ax.add_collection(LineCollection([centers[i] for i in plain], colors="#90a4ae", linewidths=0.5,
                                     linestyles=list(styles), zorder=3.2))
    handles.append(Line2D([], [], color="#90a4ae", lw=0.8, label="lane centreline"))
    for state, color in LIGHT_COLORS.items():
        lit = np.flatnonzero(light == state)
        if len(lit):
            ax.add_collection(LineCollection([centers[i] for i in lit], colors=color, linewidths=2.0,
                                             alpha=0.85, zorder=3.4))
            name = {LIGHT_RED: "red", LIGHT_YELLOW: "yellow", LIGHT_GREEN: "green"}[state]
            handles.append(Line2D([], [], color=color, lw=2, label=f"{name} light (t0)"))


def _draw_agents(ax, scene: Scene, handles: list) -> None:
    """Agents' faint future centres, and at t0 oriented boxes coloured by category with a heading tick and a 1 s
    velocity arrow (agents faster than 0.3 m/s); appends one legend handle per category present."""
    from matplotlib.collections import LineCollection, PolyCollection
    from matplotlib.patches import Patch

    ag = scene.agents
    if not len(ag):
        return
    boxes, valid = ag.boxes, ag.valid
    colors = np.array([CATEGORY_COLORS[AGENT_CATEGORIES[int(c)]] for c in ag.category])
    fut_t, fut_n = np.nonzero(valid[1:])
    if len(fut_n):
        ax.scatter(*_p(boxes[1:][fut_t, fut_n, :2]).T, s=6, c=colors[fut_n], alpha=0.25, linewidths=0,
                   zorder=4)
    now = np.flatnonzero(valid[0])
    if len(now):
        b = boxes[0, now]
        corners = box_corners(b, clockwise=True)  # (n, 4, 2) front-left, front-right, rear-right, rear-left
        ax.add_collection(PolyCollection(list(_p(corners)), facecolors=colors[now], edgecolors="#263238",
                                         linewidths=0.6, alpha=0.9, zorder=5))
        front = b[:, :2] + 0.5 * b[:, 3:4] * np.stack([np.cos(b[:, 2]), np.sin(b[:, 2])], 1)
        ticks = np.stack([_p(b[:, :2]), _p(front)], axis=1)
        ax.add_collection(LineCollection(list(ticks), colors="#263238", linewidths=0.9, zorder=5.1))
        moving = np.hypot(b[:, 6], b[:, 7]) > 0.3
        if moving.any():
            start, vel = _p(b[moving, :2]), _p(b[moving, 6:8])  # arrow = distance covered in 1 s
            ax.quiver(start[:, 0], start[:, 1], vel[:, 0], vel[:, 1], angles="xy", scale_units="xy", scale=1.0,
                      color=colors[now][moving], width=0.0035, headwidth=3.5, headlength=4, zorder=5.2)
    for c in sorted(set(int(c) for c in ag.category)):
        name = AGENT_CATEGORIES[c]
        handles.append(Patch(facecolor=CATEGORY_COLORS[name], edgecolor="#263238", label=name.replace("_", " ")))


def _draw_ego_and_plans(ax, scene: Scene, plans: np.ndarray | None, plan_labels: Sequence[str] | None,
                        handles: list) -> None:
    """Ego history (grey dots), the expert future (green dots), the extra ``plans`` ((K, 8, >=2) or (8, >=2), ego
    frame, m; legend entries for the first 8) and the ego box with its velocity arrow; appends legend handles."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch, Polygon as MplPolygon

    e = scene.ego
    ax.plot(*_p(e.history[:, :2]).T, color=HISTORY_COLOR, lw=1.0, marker="o", ms=3.0, zorder=6)
    handles.append(Line2D([], [], color=HISTORY_COLOR, marker="o", ms=3, lw=1, label="ego history (1.5 s)"))
    expert = np.vstack([[0.0, 0.0], e.future[:, :2]])
    ax.plot(*_p(expert).T, color=EXPERT_COLOR, lw=1.2, marker="o", ms=3.5, zorder=6.5)
    handles.append(Line2D([], [], color=EXPERT_COLOR, marker="o", ms=3.5, lw=1.2, label="expert plan (4 s)"))
    if plans is not None:
        plans = np.asarray(plans, np.float64)
        if plans.ndim == 2:
            plans = plans[None]
        labels = list(plan_labels) if plan_labels is not None else [f"plan {k}" for k in range(len(plans))]
        for k, plan in enumerate(plans):
            color = PLAN_COLORS[k % len(PLAN_COLORS)]
            pts = np.vstack([[0.0, 0.0], plan[:, :2]])
            ax.plot(*_p(pts).T, color=color, lw=1.2, marker="s", ms=2.8, alpha=0.9, zorder=6.6)
            if k < 8:
                handles.append(Line2D([], [], color=color, marker="s", ms=3, lw=1.2, label=labels[k]))
    v = e.vehicle
    ego_box = np.array([[v.front_length, v.width / 2], [v.front_length, -v.width / 2],
                        [-v.rear_length, -v.width / 2], [-v.rear_length, v.width / 2]])
    ax.add_patch(MplPolygon(_p(ego_box), closed=True, facecolor=EGO_COLOR, edgecolor="#311b92", lw=1.0, zorder=7))
    ax.plot(*_p(np.array([[v.rear_axle_to_center, 0.0], [v.front_length, 0.0]])).T, color="white", lw=1.2,
            zorder=7.1)
    if e.speed > 0.3:
        vel = _p(e.velocity)
        ax.quiver([0.0], [v.rear_axle_to_center], [vel[0]], [vel[1]], angles="xy", scale_units="xy", scale=1.0,
                  color=EGO_COLOR, width=0.0035, headwidth=3.5, headlength=4, zorder=7.2)
    handles.append(Patch(facecolor=EGO_COLOR, edgecolor="#311b92", label=f"ego ({e.speed:.1f} m/s)"))


def _frame_view(ax, scene: Scene, view_range: tuple[float, float, float, float], title: str | None) -> None:
    """Limits ((x_min, x_max, y_min, y_max), ego frame, m; heading up, +y on the left), labels, grid and title
    (default: command and token, plus source, map and log)."""
    x_min, x_max, y_min, y_max = view_range
    ax.set_xlim(y_max, y_min)  # inverted: +y (left of the ego) on the left
    ax.set_ylim(x_min, x_max)
    ax.set_aspect("equal", adjustable="box")
    ax.set_xlabel("y (m, left +)", fontsize=8)
    ax.set_ylabel("x (m, forward)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(True, color="#e0e0e0", lw=0.4, zorder=0)
    ax.set_axisbelow(True)
    if title is None:
        m = scene.metadata
        where = " · ".join(x for x in (m.source, m.map_name, m.log_name) if x)
        title = f"command: {scene.command_name}   token: {m.token}" + (f"\n{where}" if where else "")
    ax.set_title(title, fontsize=9)
