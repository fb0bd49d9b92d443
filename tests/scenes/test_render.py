"""Scene rendering: PNG written atomically, of the requested size, with plans and into a given Axes."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from irlvla_gym.scenes.render import render_scene
from irlvla_gym.scenes.scene import LIGHT_RED, PEDESTRIAN, PolygonSet
from irlvla_gym.scenes.testing import straight_road_scene


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) in pixels from the PNG IHDR chunk."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def busy_scene():
    scene = straight_road_scene(num_lanes=3, token="render-me", agents=[
        dict(x=15, y=0, vx=8), dict(x=6, y=-3.5, vx=12), dict(x=25, y=5, vy=-1.2, category=PEDESTRIAN, length=0.6,
                                                              width=0.6)])
    light = scene.map.lane_light_state.copy()
    light[:, 1] = LIGHT_RED
    crosswalk = PolygonSet.from_exteriors([np.array([[30.0, -9.0], [34.0, -9.0], [34.0, 2.0], [30.0, 2.0]])])
    return scene.replace(map=scene.map.__class__(**{**scene.map.__dict__, "lane_light_state": light,
                                                    "crosswalks": crosswalk, "intersections": crosswalk}))


def test_render_png_size_and_content(tmp_path: Path) -> None:
    scene = busy_scene()
    plans = np.zeros((2, 8, 3))
    plans[:, :, 0] = np.arange(1, 9) * 4.0
    plans[1, :, 1] = -np.linspace(0, 3.5, 8)
    out = tmp_path / "deep" / "scene.png"
    fig = render_scene(scene, out, plans=plans, plan_labels=["a", "b"], figsize=(6.0, 4.0), dpi=50)
    assert png_size(out) == (300, 200)
    assert out.stat().st_size > 5_000
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]
    ax = fig.axes[0]
    assert "render-me" in ax.get_title() and "straight" in ax.get_title()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert {"vehicle", "pedestrian", "red light (t0)", "crosswalk", "a", "b", "route"} <= set(labels)
    # Ego-centred, heading up: the ego's x range is the vertical axis.
    assert ax.get_ylim()[0] < 0 < ax.get_ylim()[1]


def test_render_into_axes_and_empty_agents(tmp_path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4, 4), dpi=40)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    scene = straight_road_scene(token="empty")
    assert render_scene(scene, ax=axes[1], plans=np.zeros((8, 3)), title="custom") is fig
    assert axes[1].get_title() == "custom"
    out = tmp_path / "two.png"
    render_scene(scene, out, ax=axes[0])
    assert png_size(out) == (160, 160)
