"""Env rendering: an ego-centred BEV picture (numpy + PIL, no matplotlib) with the plan and its scores.

The picture reuses the BEV observation rasteriser (:class:`irlvla_gym.obs.bev.BevRenderer`) at the render size and
colours its channels; the plan is drawn as a yellow polyline with dots at the 0.5 s poses, the driven path (closed
loop) in white, and the scores as text in the top-left corner. Frames are (H, W, 3) uint8, as gymnasium's
``RecordVideo`` expects. ``render_mode="human"`` shows the same frame in a matplotlib window (nothing is shown,
and nothing fails, on a non-interactive backend).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
from PIL import Image, ImageDraw

from irlvla_gym.obs.bev import BevRenderer
from irlvla_gym.obs.common import world_to_ego
from irlvla_gym.obs.config import ObsConfig
from irlvla_gym.scenes.scene import Scene

# Channel colours (RGB) painted in this order over a dark background.
_BACKGROUND = np.array([30, 30, 34], np.uint8)
_LAYERS = (  # (channel, colour, use the channel value as alpha)
    (0, (80, 80, 86), False),  # drivable area
    (2, (52, 86, 140), False),  # route
    (1, (200, 200, 200), True),  # lane lines
    (5, (120, 140, 200), True),  # agents past
    (3, (70, 130, 255), False),  # vehicles
    (4, (255, 150, 40), True),  # pedestrians, bicycles, static objects
    (6, (230, 40, 40), True),  # red / yellow light patches
    (7, (60, 220, 90), False),  # ego
)


class FrameRenderer:
    """Draws env frames of ``size`` (H, W) pixels covering the BEV observation's default view."""

    def __init__(self, size: tuple[int, int] = (400, 400)):
        self.size = (int(size[0]), int(size[1]))
        self.bev = BevRenderer(ObsConfig(bev_size=self.size, bev_cache_size=16))

    def frame(self, scene: Scene, pose: np.ndarray, time: float, *, plan_world: np.ndarray | None = None,
              path_world: np.ndarray | None = None, scores: Mapping[str, float] | None = None,
              title: str = "") -> np.ndarray:
        """(H, W, 3) uint8: ``scene`` seen from ``pose`` (t0 frame) at ``time``; plan / driven path in the t0 frame."""
        layers = self.bev.render(scene, pose, time)
        img = np.empty(self.size + (3,), np.float32)
        img[:] = _BACKGROUND
        for ch, colour, graded in _LAYERS:
            a = layers[ch].astype(np.float32) / 255.0 if graded else (layers[ch] > 0).astype(np.float32)
            img += a[..., None] * (np.asarray(colour, np.float32) - img)
        pil = Image.fromarray(img.astype(np.uint8))
        draw = ImageDraw.Draw(pil)
        pose = np.asarray(pose, np.float64)
        if path_world is not None and len(path_world) > 1:
            px = self.bev.to_pixels(world_to_ego(np.asarray(path_world)[:, :2], pose))
            draw.line([tuple(p) for p in px], fill=(240, 240, 240), width=2)
        if plan_world is not None:
            pts = np.vstack([pose[None, :2], np.asarray(plan_world)[:, :2]])
            px = self.bev.to_pixels(world_to_ego(pts, pose))
            draw.line([tuple(p) for p in px], fill=(255, 220, 0), width=2)
            for p in px[1:]:
                draw.ellipse([p[0] - 2, p[1] - 2, p[0] + 2, p[1] + 2], fill=(255, 220, 0))
        lines = [title] if title else []
        if scores:
            keys = [k for k in ("epdms", "nc", "dac", "ddc", "tlc", "ep", "ttc", "lk", "hc", "ec") if k in scores]
            lines.append("  ".join(f"{k.upper()} {scores[k]:.2f}" for k in keys[:5]))
            lines.append("  ".join(f"{k.upper()} {scores[k]:.2f}" for k in keys[5:]))
        for i, text in enumerate(lines):
            draw.text((5, 4 + 12 * i), text, fill=(255, 255, 255))
        return np.asarray(pil, np.uint8)


class HumanWindow:
    """A matplotlib window for ``render_mode="human"`` (a no-op on non-interactive backends)."""

    def __init__(self) -> None:
        self._fig = None
        self._im = None

    def show(self, frame: np.ndarray, fps: float) -> None:
        import matplotlib

        if matplotlib.get_backend().lower() in ("agg", "pdf", "ps", "svg", "cairo", "template") or \
                "inline" in matplotlib.get_backend().lower():
            return
        import matplotlib.pyplot as plt

        if self._fig is None or not plt.fignum_exists(self._fig.number):
            self._fig, ax = plt.subplots(figsize=(6, 6))
            ax.axis("off")
            self._im = ax.imshow(frame)
        else:
            self._im.set_data(frame)
        self._fig.canvas.draw_idle()
        plt.pause(1.0 / max(fps, 1e-3))

    def close(self) -> None:
        if self._fig is not None:
            import matplotlib.pyplot as plt

            plt.close(self._fig)
            self._fig = None
