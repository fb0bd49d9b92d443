"""``irlvla rwm dataset | train | eval`` end to end through the command line (tiny budgets): the flags land in the
typed configs and the typed entry points do the work."""

from __future__ import annotations

import json


def test_rwm_commands_end_to_end(tmp_path, capsys):
    from irlvla_gym.cli import main

    data, ckpt, report = tmp_path / "data", tmp_path / "ckpt", tmp_path / "eval"
    assert main(["rwm", "dataset", "--split", "synthetic-train", "--out", str(data), "--num-scenes", "3",
                 "--candidates", "8", "--shard-size", "2", "--no-progress"]) == 0
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["num_scenes"] == 3 and manifest["candidates"]["num_candidates"] == 8
    assert manifest["candidates"]["vocab_near"] == 1  # K / 8 per source when the defaults do not fit in K
    assert "rwm dataset:" in capsys.readouterr().out

    assert main(["rwm", "train", "--data", str(data), "--out", str(ckpt), "--epochs", "1", "--batch-scenes", "2",
                 "--val-fraction", "0.34", "--d-model", "16", "--heads", "2", "--hidden", "32", "--seed", "1",
                 "--no-progress"]) == 0
    saved = json.loads((ckpt / "config.json").read_text())
    assert saved["train"]["epochs"] == 1 and saved["train"]["val_fraction"] == 0.34 and saved["train"]["seed"] == 1
    assert saved["model"]["d_model"] == 16 and saved["model"]["hidden"] == 32
    assert "rwm train:" in capsys.readouterr().out

    assert main(["rwm", "eval", "--ckpt", str(ckpt), "--out", str(report), "--data", str(data),
                 "--speed-scenes", "0", "--no-progress"]) == 0
    printed = json.loads(capsys.readouterr().out.splitlines()[0])
    assert printed["spearman"] == round(json.loads((report / "report.json").read_text())["spearman"], 4)
    assert (report / "report.md").is_file()
