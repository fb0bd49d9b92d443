"""``irlvla render``: a closed-loop episode video of an agent with the sub-score strip (irlvla_gym.evaluation.video)."""

from __future__ import annotations

import numpy as np
import pytest

from irlvla_gym.evaluation.video import STRIP_HEIGHT, record_episode, write_video

SIZE = 96


def test_stand_still_video_has_one_frame_per_step(tmp_path):
    from irlvla_gym.cli import main

    out = tmp_path / "stand_still.mp4"
    assert main(["render", "--agent", "stand-still", "--split", "synthetic-val", "--scene", "0", "--size", str(SIZE),
                 "--out", str(out)]) == 0
    written = out if out.is_file() else out.with_suffix(".gif")  # GIF where no MP4 encoder is installed
    assert written.is_file()
    import imageio.v3 as iio

    frames = iio.imread(written)
    video = record_episode("stand-still", "synthetic-val", 0, size=SIZE)
    assert frames.shape[0] == len(video.frames) == len(video.scores) + 1
    assert frames.shape[1:3] == (SIZE + STRIP_HEIGHT, SIZE) == video.frames.shape[1:3]
    assert all({"nc", "dac", "ep", "hc", "epdms"} <= set(s) for s in video.scores)


def test_gif_and_bad_arguments(tmp_path):
    video = record_episode("constant-velocity", "synthetic-val", 0, size=SIZE, max_steps=2)
    assert len(video.frames) == 3 and video.agent == "constant-velocity"
    path = write_video(video.frames, tmp_path / "cv.gif", fps=2)
    import imageio.v3 as iio

    assert iio.imread(path).shape[0] == 3
    with pytest.raises(ValueError, match="fps"):
        write_video(video.frames, tmp_path / "x.gif", fps=0)
    with pytest.raises(ValueError, match="scene_index"):
        record_episode("stand-still", scene_index=-1)
    assert np.asarray(video.frames).dtype == np.uint8
