"""``irlvla check-scorer --navsim`` (irlvla_gym.evaluation.navsim_diff): plan set, comparison, skip path, and the
project side end to end with the NAVSIM side replaced by a fake interpreter (CI has no NAVSIM)."""

from __future__ import annotations

import ast
import json
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest

from irlvla_gym.cli import build_parser, main
from irlvla_gym.evaluation import navsim_diff as nd
from irlvla_gym.scenes import synthetic


@pytest.fixture(scope="module")
def scene():
    return next(s for s in synthetic.iter_scenes("synthetic-test", num=1))


# ---------------------------------------------------------------------------------------------------------------- plans


def test_plan_set(scene) -> None:
    plans = nd.make_plans(scene)
    assert plans.shape == (len(nd.PLAN_NAMES), 8, 3) and np.isfinite(plans).all()
    by = dict(zip(nd.PLAN_NAMES, plans))
    human = np.asarray(scene.ego.future, float)
    np.testing.assert_allclose(by["human"], human)
    assert not by["stop"].any()
    speed = float(np.hypot(*scene.ego.velocity))
    np.testing.assert_allclose(by["constant_velocity"][:, 0], speed * nd.PLAN_TIMES)
    assert not by["constant_velocity"][:, 1:].any()
    # lateral ramps: full offset from t = 2 s, along the human's left normal, half of it at 1 s
    for name, off in (("left_2m", 2.0), ("right_3.5m", -3.5)):
        d = by[name][:, :2] - human[:, :2]
        normal = np.stack([-np.sin(human[:, 2]), np.cos(human[:, 2])], 1)
        np.testing.assert_allclose((d * normal).sum(1), off * np.clip(nd.PLAN_TIMES / 2, 0, 1), atol=1e-9)

    def length(p):
        return np.linalg.norm(np.diff(np.vstack([np.zeros(2), p[:, :2]]), axis=0), axis=1).sum()

    total = length(human)
    assert length(by["human_x0.5"]) == pytest.approx(0.5 * total, rel=0.02)
    assert length(by["human_x1.4"]) == pytest.approx(1.4 * total, rel=0.02)
    # the random arc depends on the token only, not on the call order
    np.testing.assert_array_equal(nd.make_plans(scene)[6], plans[6])
    assert np.all(np.abs(plans[:, :, 2]) <= np.pi + 1e-9)


def test_previous_human_plan_is_the_logged_drive_seen_from_half_a_second_earlier() -> None:
    from irlvla_gym.scenes.testing import straight_road_scene

    scene = straight_road_scene(speed=10.0)
    prev = nd.previous_human_plan(scene)
    assert prev.shape == (8, 3)
    np.testing.assert_allclose(prev[:, 0], 5.0 * np.arange(1, 9), atol=1e-6)  # t = 0 .. 3.5 s from t = -0.5 s
    np.testing.assert_allclose(prev[:, 1:], 0.0, atol=1e-6)


def test_rescaled_standing_ego_and_arc() -> None:
    still = np.zeros((8, 3))
    np.testing.assert_array_equal(nd._rescaled_along(still, 1.4), still)
    straight = nd._arc(4.0, 0.0)
    np.testing.assert_allclose(straight[:, 0], 4.0 * nd.PLAN_TIMES)
    curved = nd._arc(4.0, 0.05)
    np.testing.assert_allclose(np.hypot(curved[:, 0], curved[:, 1] - 20.0), 20.0, atol=1e-9)  # circle radius 1/k


def test_select_synthetic_balances_layouts() -> None:
    chosen = nd.select_synthetic(12)
    layouts = [synthetic.scene_layout(s) for s in chosen]
    assert len(chosen) == 12 and {layouts.count(layout) for layout in synthetic.LAYOUTS} == {2}
    tokens = [s.token for s in chosen]
    assert tokens == sorted(tokens)  # first scenes in index order


def test_evenly() -> None:
    assert nd._evenly(list(range(10)), 3) == [0, 4, 9] or nd._evenly(list(range(10)), 3) == [0, 5, 9]
    assert nd._evenly([1, 2], None) == [1, 2] and nd._evenly([1, 2], 5) == [1, 2]


# ------------------------------------------------------------------------------------------------------ comparison


def _row(ep=0.9, epdms=0.95, **kw):
    vals = {m: 1.0 for m in nd.EXACT_METRICS}
    vals.update(ep=ep, epdms=epdms, **kw)
    return vals


def _answer(rows_per_token, normaliser=20.0, progress=10.0):
    return {"results": {t: {"pdm_normaliser": normaliser,
                            "plans": [{"progress_raw": progress, "on": r, "off": r} for r in rows]}
                        for t, rows in rows_per_token.items()}, "errors": {}}


def test_compare_counts_and_tolerances() -> None:
    names = ("a", "b")
    navsim = _answer({"t1": [_row(), _row()], "t2": [_row(), _row()], "only_navsim": [_row(), _row()]})
    ours = _answer({"t1": [_row(ep=0.905), _row(lk=0.0)],           # EP within 0.01; LK differs
                    "t2": [_row(epdms=0.93), _row(nc=0.5)],          # EPDMS off by 0.02; NC differs
                    "only_ours": [_row(), _row()]}, normaliser=21.0, progress=10.6)
    cmp = nd.compare(ours, navsim, names, ("on",))
    assert cmp["scenes"] == 2 and cmp["plans"] == 4
    t = cmp["modes"]["on"]
    assert t["ep"]["agree"] == 4 and t["ep"]["mean_abs_diff"] == pytest.approx(0.005 / 4)
    assert t["lk"]["share"] == 0.75 and t["nc"]["share"] == 0.75 and t["epdms"]["share"] == 0.75
    assert t["dac"]["share"] == 1.0 and t["lk"]["mean_abs_diff"] == pytest.approx(0.25)
    got = {(d["token"], d["plan"], d["metric"], d["navsim"], d["ours"]) for d in cmp["disagreements"]}
    assert got == {("t1", "b", "lk", 1.0, 0.0), ("t2", "a", "epdms", 0.95, 0.93), ("t2", "b", "nc", 1.0, 0.5)}
    assert cmp["progress"]["mean"] == pytest.approx(0.6) and cmp["progress"]["within_0.5m"] == 0.0
    assert cmp["normaliser"]["n"] == 2 and cmp["normaliser"]["mean"] == pytest.approx(1.0)
    text = nd.format_report({"sources": {"synthetic": cmp}, "bad_scenes": [
        {"source": "av2", "token": "x", "stage": "navsim", "reason": "Traceback\n  ...\nValueError: boom"}]},
        max_disagreements=2)
    assert "synthetic  on" in text and "0.750" in text and "ValueError: boom" in text
    assert "3 disagreements" in text and "first 2" in text


def test_compare_both_modes_orders_on_first() -> None:
    navsim = _answer({"t": [_row()]})
    ours = _answer({"t": [_row(ttc=0.0)]})
    cmp = nd.compare(ours, navsim, ("p",), nd.MODES)
    assert [d["mode"] for d in cmp["disagreements"]] == ["on", "off"]
    assert cmp["modes"]["off"]["ttc"]["share"] == 0.0


# ---------------------------------------------------------------------------------------------------------- CLI


def test_filter_flag_stays_compatible() -> None:
    parser = build_parser()
    assert parser.parse_args(["check-scorer", "--filter"]).filter == "on"
    assert parser.parse_args(["check-scorer"]).filter is None
    assert parser.parse_args(["check-scorer", "--navsim", "--filter", "both"]).filter == "both"


def test_skip_without_navsim(capsys, monkeypatch) -> None:
    monkeypatch.delenv(nd.ENV_PYTHON, raising=False)
    assert main(["check-scorer", "--navsim", "--navsim-python", "/nonexistent/bin/python"]) == 0
    out = capsys.readouterr().out.strip()
    assert len(out.splitlines()) == 1 and "skipped" in out and "--navsim-python" in out
    assert main(["check-scorer", "--navsim", "--json"]) == 0  # unset: skipped too
    report = json.loads(capsys.readouterr().out)
    assert report["status"] == "skipped" and nd.ENV_PYTHON in report["reason"]


def test_skip_when_import_fails(capsys) -> None:
    # a working interpreter without navsim
    cmd = f"{shlex.quote(sys.executable)} -S -I"
    assert main(["check-scorer", "--navsim", "--navsim-python", cmd, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["status"] == "skipped" and "import navsim, nuplan" in report["reason"]


def test_navsim_side_is_standalone() -> None:
    """navsim_side.py runs under NAVSIM's interpreter: only navsim, nuplan, numpy and the standard library."""
    tree = ast.parse(nd.NAVSIM_SIDE.read_text())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            roots.add(node.module.split(".")[0])
    allowed = {"navsim", "nuplan", "numpy", "__future__"} | set(sys.stdlib_module_names)
    assert roots <= allowed, roots - allowed


FAKE_NAVSIM = '''
import json, sys
if sys.argv[1:2] == ["-c"]:          # the "import navsim, nuplan" probe
    sys.exit(0)
side, request = sys.argv[1], sys.argv[2]
assert side.endswith("navsim_side.py")
req = json.load(open(request))
tokens = sorted(req["plans"])
print("NAVSIM_PROGRESS 0 %d" % len(tokens), file=sys.stderr)
print("a log line", file=sys.stderr)
row = {"nc": 1.0, "dac": 1.0, "ddc": 1.0, "tlc": 1.0, "ep": 0.9, "ttc": 1.0, "lk": 1.0, "hc": 1.0, "epdms": 0.95,
       "pdm_score": 0.95}
results = {}
for t in tokens[:-1]:
    assert all(len(p) == 8 and all(len(q) == 3 for q in p) for p in req["plans"][t])
    assert len(req["previous_plans"][t]) == len(req["plans"][t])
    results[t] = {"scene_type": "ORIGINAL", "pdm_normaliser": 20.0,
                  "plans": [dict({m: dict(row, ec=1.0) for m in req["modes"]}, progress_raw=10.0)
                            for _ in req["plans"][t]]}
    print("NAVSIM_PROGRESS 1 %d" % len(tokens), file=sys.stderr)
answer = {"status": "ok", "results": results, "errors": {tokens[-1]: "Traceback\\nRuntimeError: fake failure"},
          "versions": {"navsim": "fake"}, "maps_root": req["maps_root"]}
json.dump(answer, open(req["out"], "w"))
'''


def test_end_to_end_with_fake_navsim(tmp_path, capsys) -> None:
    fake = tmp_path / "fake_navsim.py"
    fake.write_text(FAKE_NAVSIM)
    out = tmp_path / "out"
    cmd = f"{shlex.quote(sys.executable)} {shlex.quote(str(fake))}"
    rc = main(["check-scorer", "--navsim", "--navsim-python", cmd, "--sources", "synthetic", "--scenes", "2",
               "--out", str(out), "--json", "--no-progress"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["status"] == "ok" and report["navsim_versions"] == {"navsim": "fake"}
    assert report["scene_counts"] == {"synthetic": 2}
    sdir = out / "synthetic"
    request = json.loads((sdir / "navsim_request.json").read_text())
    tokens = sorted(request["plans"])
    assert len(tokens) == 2 and request["modes"] == ["on", "off"] and request["shims"] is False
    assert Path(request["maps_root"]) == (sdir / "maps").resolve() and (sdir / "logs").is_dir()
    assert np.asarray(request["plans"][tokens[0]]).shape == (len(nd.PLAN_NAMES), 8, 3)
    assert "a log line" in (sdir / "navsim_side.log").read_text()
    ours = json.loads((sdir / "ours.json").read_text())
    assert set(ours["results"]) == set(tokens), ours["errors"]
    rec = ours["results"][tokens[0]]
    assert len(rec["plans"]) == len(nd.PLAN_NAMES) and rec["pdm_normaliser"] > 0
    assert set(rec["plans"][0]) == {"progress_raw", "on", "off"}
    assert set(rec["plans"][0]["on"]) >= set(nd.METRICS)
    # the fake failed the last token: reported as a bad scene, left out; the first one is compared
    cmp = report["sources"]["synthetic"]
    assert cmp["scenes"] == 1 and cmp["plans"] == len(nd.PLAN_NAMES)
    assert {"on", "off"} == set(cmp["modes"]) and cmp["modes"]["on"]["nc"]["n"] == len(nd.PLAN_NAMES)
    assert cmp["modes"]["off"]["ec"]["n"] == len(nd.PLAN_NAMES)  # EC compared against the previous frame's plan
    assert "ec" in rec["plans"][0]["on"] and rec["plans"][0]["on"]["ec"] == rec["plans"][0]["off"]["ec"]
    assert any(b["token"] == tokens[-1] and b["stage"] == "navsim" for b in report["bad_scenes"])
    assert json.loads((out / "report.json").read_text())["sources"]["synthetic"]["scenes"] == 1
