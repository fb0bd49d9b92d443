"""Front camera: rendered geometry lands where it should; real CAM_F0 images are used when present."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from irlvla_gym.obs.camera import AGENT_COLOURS, CameraRenderer, clip_near
from irlvla_gym.obs.config import ObsConfig
from irlvla_gym.scenes.scene import VEHICLE
from irlvla_gym.scenes.testing import straight_road_scene


def _agent_pixels(image: np.ndarray) -> np.ndarray:
    """(rows, cols) of pixels whose colour is a shade of the vehicle colour (red dominant)."""
    r, g, b = (image[..., i].astype(int) for i in range(3))
    return np.nonzero((r > g + 50) & (r > b + 50) & (r > 90))


def test_box_ahead_is_centred_and_left_box_on_left():
    renderer = CameraRenderer()
    h, w = renderer.shape[:2]
    ahead = renderer.render(straight_road_scene(agents=[dict(x=25.0, y=0.0)]))
    rows, cols = _agent_pixels(ahead)
    assert len(cols) > 20
    assert abs(cols.mean() - w / 2) < 4 and rows.mean() < h * 0.75
    left = renderer.render(straight_road_scene(agents=[dict(x=25.0, y=6.0)]))
    rows, cols = _agent_pixels(left)
    assert len(cols) > 20 and cols.mean() < w / 2 - 20
    behind = renderer.render(straight_road_scene(agents=[dict(x=-20.0, y=0.0)]))
    assert len(_agent_pixels(behind)[0]) == 0
    assert AGENT_COLOURS[VEHICLE][0] > 150


def test_road_below_horizon_sky_above():
    image = CameraRenderer().render(straight_road_scene())
    h, w = image.shape[:2]
    sky, road = image[2, w // 2].astype(int), image[h - 3, w // 2].astype(int)
    assert sky[2] > sky[0] + 50  # blue
    assert abs(road[0] - road[2]) < 40 and road.mean() < 160  # grey-ish road (route tint) under the camera


def test_box_crossing_the_near_plane_is_drawn():
    # a truck whose body spans from behind the camera to 6 m ahead, right beside the lane: its faces are clipped
    image = CameraRenderer().render(straight_road_scene(agents=[dict(x=0.0, y=-3.0, length=14.0, width=2.5,
                                                                     height=3.5)]))
    rows, cols = _agent_pixels(image)
    assert len(cols) > 500 and cols.mean() > image.shape[1] / 2


def test_clip_near():
    square = np.array([[-1.0, 0.0, -1.0], [1.0, 0.0, -1.0], [1.0, 0.0, 3.0], [-1.0, 0.0, 3.0]])
    clipped = clip_near(square, 0.5)
    assert len(clipped) == 4 and clipped[:, 2].min() == pytest.approx(0.5)
    assert len(clip_near(square - [0, 0, 10], 0.5)) == 0
    np.testing.assert_array_equal(clip_near(square + [0, 0, 5], 0.5), square + [0, 0, 5])


def test_real_cam_f0_is_used(tmp_path):
    path = tmp_path / "cam_f0.png"
    Image.fromarray(np.full((90, 160, 3), (10, 200, 30), np.uint8)).save(path)
    scene = straight_road_scene().replace(cameras={"CAM_F0": str(path)})
    image = CameraRenderer(ObsConfig(camera_size=(45, 80))).render(scene)
    assert image.shape == (45, 80, 3)
    assert np.all(image == np.array([10, 200, 30], np.uint8))
    rendered = CameraRenderer(ObsConfig(camera_source="render")).render(scene)
    assert not np.all(rendered == np.array([10, 200, 30], np.uint8))
    missing = straight_road_scene().replace(cameras={"CAM_F0": str(tmp_path / "missing.png")})
    assert CameraRenderer().render(missing).shape == (128, 256, 3)  # falls back to rendering
    with pytest.raises(FileNotFoundError):
        CameraRenderer(ObsConfig(camera_source="real")).render(missing)
