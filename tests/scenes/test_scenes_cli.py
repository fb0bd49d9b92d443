"""``irlvla scenes build | info | render`` end to end through ``irlvla_gym.cli.main``."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from irlvla_gym.cli import main
from irlvla_gym.scenes import cli as scenes_cli
from irlvla_gym.scenes.scene import PEDESTRIAN
from irlvla_gym.scenes.sources import SkippedItem
from irlvla_gym.scenes.testing import straight_road_scene


def handmade_input(args: argparse.Namespace) -> scenes_cli.SourceInput:
    """Test source: 5 small scenes and one skipped item, limited by --num."""
    items = [straight_road_scene(token=f"hand{i}", num_lanes=1 + i % 2,
                                 agents=[dict(x=12.0 + j, y=0.0, vx=3.0, category=PEDESTRIAN * (j % 2))
                                         for j in range(i)]) for i in range(5)]
    items.insert(2, SkippedItem("hand-broken", "field 'ego.future': non-finite value"))
    return scenes_cli.SourceInput(scenes_cli._limit_scenes(items, args.num), total=len(items))


@pytest.fixture()
def handmade_source(monkeypatch):
    monkeypatch.setitem(scenes_cli.SOURCES, "handmade", handmade_input)


def test_build_info_render(tmp_path: Path, handmade_source, capsys) -> None:
    out = tmp_path / "store"
    assert main(["scenes", "build", "--source", "handmade", "--out", str(out), "--shard-size", "2",
                 "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "5 scenes" in text and "hand-broken" in text

    assert main(["scenes", "info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "5 in 3 shard(s)" in text and "source:       handmade" in text
    assert "straight 5 (100%)" in text and "agents/scene: min 0, mean 2.0, max 4" in text
    assert "lanes/scene:  min 1, mean 1.4, max 2" in text and "straight (5)" in text
    assert "skipped:      1 item(s)" in text and "verify:       ok" in text

    png = tmp_path / "r.png"
    assert main(["scenes", "render", str(out), "--index", "3", "--out", str(png)]) == 0
    assert png.stat().st_size > 5_000 and "hand3" in capsys.readouterr().out
    assert main(["scenes", "render", str(out), "--token", "hand4", "--out", str(png),
                 "--view-range", "-10", "30", "-20", "20"]) == 0

    # A flipped byte: info reports the failed verification and exits 1.
    victim = out / "shards" / "00001" / "agents.boxes.npy"
    data = bytearray(victim.read_bytes())
    data[-1] ^= 1
    victim.write_bytes(bytes(data))
    assert main(["scenes", "info", str(out)]) == 1
    assert "verify:       FAILED" in capsys.readouterr().out


def test_build_num_limit(tmp_path: Path, handmade_source, capsys) -> None:
    out = tmp_path / "s"
    assert main(["scenes", "build", "--source", "handmade", "--num", "2", "--out", str(out), "--no-progress"]) == 0
    assert "2 scenes" in capsys.readouterr().out


def test_build_synthetic(tmp_path: Path, capsys) -> None:
    pytest.importorskip("irlvla_gym.scenes.synthetic")
    out = tmp_path / "syn"
    assert main(["scenes", "build", "--source", "synthetic", "--num", "2", "--out", str(out), "--no-progress"]) == 0
    assert main(["scenes", "info", str(out)]) == 0
    assert "split:        synthetic-train" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["scenes", "info", "{tmp}/missing"], "missing does not exist"),
    (["scenes", "render", "{tmp}/missing", "--index", "0", "--out", "{tmp}/x.png"], "missing does not exist"),
    (["scenes", "build", "--source", "av2", "--out", "{tmp}/o"], "--path is required for --source av2"),
    (["scenes", "build", "--source", "av2", "--path", "{tmp}/nothing", "--out", "{tmp}/o"],
     "--path {tmp}/nothing: no such file or directory"),
    (["scenes", "build", "--source", "scenarionet", "--path", "{tmp}", "--drivable-area", "{tmp}/none.json",
      "--out", "{tmp}/o"], "--drivable-area {tmp}/none.json: no such file"),
    (["scenes", "build", "--source", "navsim", "--path", "{tmp}", "--maps-root", "{tmp}/nomaps", "--out", "{tmp}/o"],
     "--maps-root {tmp}/nomaps: no such directory"),
    (["scenes", "build", "--source", "handmade", "--num", "0", "--out", "{tmp}/o"], "--num must be >= 1"),
    (["scenes", "build", "--source", "handmade", "--shard-size", "0", "--out", "{tmp}/o"], "--shard-size must be"),
    (["scenes", "build", "--source", "handmade", "--out", "{tmp}/file.txt"], "--out {tmp}/file.txt: exists and is not"),
])
def test_bad_arguments(tmp_path: Path, handmade_source, capsys, argv, message) -> None:
    (tmp_path / "file.txt").write_text("x")
    assert main([a.format(tmp=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("irlvla: error: ") and message.format(tmp=tmp_path) in err
    assert len(err.splitlines()) == 1


def test_render_bad_index_and_token(tmp_path: Path, handmade_source, capsys) -> None:
    out = tmp_path / "store"
    main(["scenes", "build", "--source", "handmade", "--out", str(out), "--no-progress"])
    capsys.readouterr()
    png = str(tmp_path / "x.png")
    assert main(["scenes", "render", str(out), "--index", "7", "--out", png]) == 2
    assert "--index 7: out of range" in capsys.readouterr().err
    assert main(["scenes", "render", str(out), "--token", "nope", "--out", png]) == 2
    assert "--token 'nope': not in scene store" in capsys.readouterr().err
    assert main(["scenes", "render", str(out), "--out", png]) == 2
    assert "exactly one of --index or --token" in capsys.readouterr().err
    (out / "manifest.json").write_text("{not json")
    assert main(["scenes", "info", str(out)]) == 2
    assert "manifest.json: invalid manifest" in capsys.readouterr().err


def test_build_that_stores_nothing_fails_naming_the_reason(tmp_path: Path, monkeypatch, capsys) -> None:
    """Every input item skipped: exit 1 with the skipped items' reasons, not an empty success (issue trust, 7)."""
    def all_bad(args: argparse.Namespace) -> scenes_cli.SourceInput:
        return scenes_cli.SourceInput(iter([SkippedItem(f"log{i}.pkl", "not a readable pickle (LookupError)")
                                            for i in range(4)]), total=4)

    monkeypatch.setitem(scenes_cli.SOURCES, "allbad", all_bad)
    assert main(["scenes", "build", "--source", "allbad", "--out", str(tmp_path / "s"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "no scene was stored" in err and "log0.pkl: not a readable pickle" in err and "1 more skipped" in err


def test_merge_stores(tmp_path: Path, capsys) -> None:
    """``irlvla scenes merge A:N B --out C``: the first N scenes of A then all of B, one store; a token in two stores
    is refused naming both."""
    from irlvla_gym.scenes.store import SceneStore, build_store

    a, b = tmp_path / "a", tmp_path / "b"
    build_store([straight_road_scene(token=f"a{i}") for i in range(3)], a, split="x", source="test", progress=False)
    build_store([straight_road_scene(token=f"b{i}") for i in range(2)], b, split="y", source="test", progress=False)
    assert main(["scenes", "merge", f"{a}:2", str(b), "--out", str(tmp_path / "m"), "--no-progress"]) == 0
    merged = SceneStore(tmp_path / "m")
    assert list(merged.tokens) == ["a0", "a1", "b0", "b1"]
    assert merged[2].token == "b0"
    capsys.readouterr()
    assert main(["scenes", "merge", str(a), str(a), "--out", str(tmp_path / "dup"), "--no-progress"]) == 2
    assert "in both" in capsys.readouterr().err
    assert main(["scenes", "merge", str(tmp_path / "nope"), "--out", str(tmp_path / "x"), "--no-progress"]) == 2
    assert "not a scene-store directory" in capsys.readouterr().err
