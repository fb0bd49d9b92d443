"""``irlvla render``: a video of an agent driving a scene closed loop, with the scorer's sub-scores on every frame.

The agent (any leaderboard spec: ``stand-still``, ``constant-velocity``, ``pdm-closed``, ``human``, ``bc_default``,
a model path, an entry point; :func:`irlvla_gym.agents.load_agent`) drives ``IRLVLA-Navsim-ClosedLoop-v2``: every
0.5 s it plans from the scene re-expressed at the current time (the scene a learned reward sees) and its own
observation keys; the ego executes the first 0.5 s. Each frame is the env's ``rgb_array`` render (BEV map, agents,
plan in yellow, driven path in white; :class:`irlvla_gym.envs.render.FrameRenderer`) above a strip with the last
step's NC, DAC, DDC, TLC, EP, TTC, LK, HC and EPDMS and the episode's mean EPDMS so far::

    irlvla render --agent stand-still --out runs/video/stand_still.mp4
    irlvla render --agent pdm-closed --split synthetic-val --scene 3 --out runs/video/pdm.gif --fps 2

MP4 (H.264 through imageio-ffmpeg) when the suffix is ``.mp4`` and an encoder is installed, else a GIF beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

ENV_ID = "IRLVLA-Navsim-ClosedLoop-v2"
OVERLAY_SCORES = ("nc", "dac", "ddc", "tlc", "ep", "ttc", "lk", "hc", "epdms")
STRIP_HEIGHT = 36
"""Pixels of the score strip under each frame."""


@dataclass
class EpisodeVideo:
    """What :func:`record_episode` produced.

    Attributes:
        frames: (T + 1, H, W, 3) uint8, the reset frame and one per step. scores: per step, the info's scores.
        token: the scene's token. agent: the agent's name.
    """

    frames: np.ndarray
    scores: list[dict[str, float]]
    token: str
    agent: str


def score_strip(width: int, scores: Mapping[str, float] | None, mean_epdms: float | None) -> np.ndarray:
    """(STRIP_HEIGHT, width, 3) uint8: the sub-scores of ``scores`` (``-`` before the first step) and the mean."""
    from PIL import Image, ImageDraw

    pil = Image.new("RGB", (width, STRIP_HEIGHT), (20, 20, 20))
    draw = ImageDraw.Draw(pil)
    cells = [f"{k.upper()} {scores[k]:.2f}" if scores and k in scores else f"{k.upper()} -" for k in OVERLAY_SCORES]
    draw.text((4, 3), "  ".join(cells[:5]), fill=(255, 255, 255))
    tail = "  ".join(cells[5:]) + (f"   mean EPDMS {mean_epdms:.2f}" if mean_epdms is not None else "")
    draw.text((4, 19), tail, fill=(255, 255, 255))
    return np.asarray(pil, np.uint8)


def with_strip(frame: np.ndarray, scores: Mapping[str, float] | None, history: Sequence[float]) -> np.ndarray:
    """``frame`` (H, W, 3) with the score strip appended below: (H + STRIP_HEIGHT, W, 3)."""
    mean = float(np.mean(history)) if len(history) else None
    return np.concatenate([frame, score_strip(frame.shape[1], scores, mean)], axis=0)


def record_episode(agent_spec: Any, scenes: Any = "synthetic-val", scene_index: int = 0, num_scenes: int | None = None,
                   size: int = 400, max_steps: int | None = None, trust_pickle: bool = False) -> EpisodeVideo:
    """Drive one closed-loop episode of ``agent_spec`` in scene ``scene_index`` of ``scenes`` (split name, store or
    scene list) and collect its frames (``size`` x ``size`` pixels plus the strip). ``max_steps``: stop early."""
    import gymnasium as gym

    import irlvla_gym  # noqa: F401  (registers the ids)
    from irlvla_gym.agents import load_agent

    if scene_index < 0:
        raise ValueError(f"scene_index must be >= 0, got {scene_index}")
    agent = load_agent(agent_spec, trust_pickle=trust_pickle)
    obs_keys = tuple(agent.obs_keys) or ("ego",)  # scene-based agents: the cheapest observation
    obs_config = getattr(agent, "obs_config", None)
    env = gym.make(ENV_ID, scenes=scenes, num_scenes=num_scenes or scene_index + 1, obs_keys=obs_keys,
                   render_mode="rgb_array", render_size=(size, size),
                   **({"obs_config": obs_config} if obs_config is not None else {}))
    base = env.unwrapped
    obs, info = env.reset(options={"scene_index": scene_index})
    frames, scores, history = [with_strip(env.render(), None, [])], [], []
    done, steps = False, 0
    while not done and (max_steps is None or steps < max_steps):
        scene = base.core.mode.reward_scenes(base.core, base.state, np.array([0]))[0]
        plan = np.asarray(agent.plan(obs, scene), np.float64).reshape(8, 3)
        obs, _, terminated, truncated, info = env.step(base.plan_to_action(plan))
        step_scores = {k: float(v) for k, v in (info.get("rewards") or {}).items() if k in OVERLAY_SCORES}
        scores.append(step_scores)
        if "epdms" in step_scores:
            history.append(step_scores["epdms"])
        frames.append(with_strip(env.render(), step_scores, history))
        done, steps = terminated or truncated, steps + 1
    env.close()
    return EpisodeVideo(np.stack(frames), scores, str(info.get("token", "")), agent.name)


def write_video(frames: np.ndarray, path: str | Path, fps: float = 2.0) -> Path:
    """Write (T, H, W, 3) uint8 ``frames`` to ``path``: MP4 when the suffix is .mp4 and imageio-ffmpeg is installed,
    else a GIF (the suffix replaced by .gif). Returns the written path."""
    import imageio.v2 as imageio

    path = Path(path)
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".mp4":
        try:
            import imageio_ffmpeg  # noqa: F401  (the MP4 encoder)

            imageio.mimwrite(path, list(frames), fps=fps, macro_block_size=1, codec="libx264", quality=7)
            return path
        except ImportError:
            path = path.with_suffix(".gif")
    imageio.mimwrite(path, list(frames), duration=1000.0 / fps, loop=0)
    return path


def register(subparsers) -> None:
    """Add ``irlvla render``."""
    p = subparsers.add_parser(
        "render", help="write an MP4/GIF of an agent driving a scene closed loop, sub-scores on every frame",
        description=__doc__.split("\n\n")[0])
    p.add_argument("--agent", default="stand-still",
                   help="agent spec as the leaderboard resolves it: stand-still, constant-velocity, pdm-closed, "
                        "human, bc_default, a model .zip, an entry point (default stand-still)")
    p.add_argument("--split", default="synthetic-val", help="scene split or store (default synthetic-val)")
    p.add_argument("--scene", type=int, default=0, help="scene index in the split (default 0)")
    p.add_argument("--out", type=Path, default=Path("runs/video/episode.mp4"),
                   help="output .mp4 (or .gif); a GIF is written where no MP4 encoder is installed")
    p.add_argument("--fps", type=float, default=2.0, help="frames per second (default 2: real time, 0.5 s a step)")
    p.add_argument("--size", type=int, default=400, help="frame width and height in pixels (default 400)")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many 0.5 s steps")
    p.add_argument("--trust-pickle", action="store_true", help="allow SB3 .zip agents (their loading unpickles)")
    p.set_defaults(func=run_render)


def run_render(args) -> int:
    """The ``irlvla render`` handler: record, write, print the path and the episode's scores."""
    if args.size < 32:
        raise SystemExit(f"--size must be >= 32 pixels, got {args.size}")
    video = record_episode(args.agent, args.split, args.scene, size=args.size, max_steps=args.max_steps,
                           trust_pickle=args.trust_pickle)
    path = write_video(video.frames, args.out, args.fps)
    epdms = [s["epdms"] for s in video.scores if "epdms" in s]
    print(f"{path}: {video.agent} in {video.token}, {len(video.frames)} frames "
          f"({video.frames.shape[2]}x{video.frames.shape[1]}), mean EPDMS "
          f"{np.mean(epdms) if epdms else float('nan'):.3f} over {len(video.scores)} steps")
    return 0


__all__ = ["ENV_ID", "EpisodeVideo", "OVERLAY_SCORES", "record_episode", "register", "run_render", "score_strip",
           "write_video"]
