"""Pictures of the worst scenes of a recipe (baselines/figures.py, ``irlvla baselines compare --figures K``)."""

from __future__ import annotations

from baselines.figures import worst_scenes


def _result(epdms):
    return {"scores": {"epdms": list(epdms)}, "tokens": [f"t{i}" for i in range(len(epdms))]}


def test_worst_scenes_rank_the_paired_loss_and_name_the_worst_seed():
    results = {"bc": _result([0.9, 0.8, 0.5, 1.0]),
               "run-seed0": _result([0.9, 0.2, 0.6, 0.9]),
               "run-seed1": _result([0.9, 0.6, float("nan"), 1.0])}  # NaN: a failed plan, scored 0
    worst = worst_scenes(results, ["run-seed0", "run-seed1"], ["bc"], k=3)
    # losses (seed means): scene 1: 0.8 - 0.4 = 0.4, scene 2: 0.5 - 0.3 = 0.2, scene 3: 1.0 - 0.95 = 0.05; scene 0: 0
    assert [w[0] for w in worst] == [1, 2, 3]
    assert worst[0] == (1, "run-seed0", 0.2, 0.8)
    assert worst[1][1] == "run-seed1" and worst[1][2] == 0.0  # the failed seed is the worst one there
    assert worst_scenes(results, ["run-seed0", "run-seed1"], ["bc"], k=1) == worst[:1]
    # a row that is nowhere worse than the baseline has no worst scenes
    assert worst_scenes({"bc": _result([0.5, 0.5]), "x": _result([0.6, 0.5])}, ["x"], ["bc"], k=2) == []

