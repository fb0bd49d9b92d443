"""Store build hooks (irlvla_gym/scenes/source.py): registered or entry-point hooks run after a store build."""

from __future__ import annotations

from pathlib import Path

from irlvla_gym.scenes import source


def test_registered_hook_runs_after_build_split_store(tmp_path, monkeypatch):
    monkeypatch.setenv("IRLVLA_CACHE", str(tmp_path))
    monkeypatch.setattr(source, "_HOOKS", {})
    calls = []
    source.register_build_hook("probe", lambda path, progress: calls.append((path, progress)))
    out = source.build_split_store("synthetic-val", 2, progress=False)
    assert calls == [(out, False)] and (out / "manifest.json").exists()
    source.build_split_store("synthetic-val", 2, progress=False, hooks=False)
    assert len(calls) == 1


def test_entry_point_hooks_are_discovered(monkeypatch):
    class EntryPoint:
        name = "declared"

        @staticmethod
        def load():
            return hook

    def hook(path: Path, progress: bool) -> None:
        seen.append(path)

    seen: list[Path] = []
    monkeypatch.setattr(source, "_HOOKS", {})
    monkeypatch.setattr(source.importlib.metadata, "entry_points",
                        lambda group: [EntryPoint()] if group == source.HOOK_ENTRY_POINT_GROUP else [])
    assert source.run_build_hooks("somewhere", False) == ["declared"]
    assert seen == [Path("somewhere")]
