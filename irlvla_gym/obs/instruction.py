"""``instruction`` observation: a natural-language driving instruction and its fixed-length token ids.

The text is built deterministically from the command and the scene around the ego pose at the observed time:

    ``<manoeuvre>[, <clause>[, <clause>]]``

* manoeuvre (from the command and the route ahead): "turn left at the intersection ahead", "go straight through
  the intersection", "change to the left lane", "follow the road to the right", "keep straight", "follow the
  route" (unknown command), ...
* clauses, in priority order, at most two: a pedestrian on a crosswalk the route crosses within 40 m ("stop for the
  pedestrian on the crosswalk ahead"); the traffic light of the next route lane that has one within 60 m (at the
  start of a connector / intersection lane, else at the lane's end: "the light is red/yellow/green"); the nearest
  road user in the route corridor within 40 m ("follow the car ahead", "the car ahead is stopped", "follow the
  cyclist ahead", "watch out for the pedestrian ahead", "go around the obstacle ahead"; dropped when it repeats the
  crosswalk pedestrian).

Tokens come from a word-level tokenizer shipped in ``irlvla_gym/obs/tokenizer/tokenizer.json`` (HuggingFace
``tokenizers`` WordLevel; ``[PAD]`` = 0, ``[UNK]`` = 1, ``[CLS]`` = 2, ``[SEP]`` = 3, then the template words in
sorted order). It loads with ``transformers.PreTrainedTokenizerFast(tokenizer_file=TOKENIZER_PATH)``;
:func:`build_tokenizer_json` regenerates it byte for byte from the templates below.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np

from irlvla_gym.geometry import polyline_length
from irlvla_gym.obs.base import ObservationType
from irlvla_gym.obs.common import EgoStatus, agents_at_time, as_pose, light_state_at_time
from irlvla_gym.scenes.scene import (
    BICYCLE, COMMAND_LEFT, COMMAND_RIGHT, COMMAND_STRAIGHT, COMMAND_UNKNOWN, LIGHT_GREEN, LIGHT_NONE, LIGHT_RED,
    LIGHT_YELLOW, PEDESTRIAN, STATIC_CATEGORIES, VEHICLE, Scene,
)

TOKENIZER_DIR = Path(__file__).resolve().parent / "tokenizer"
TOKENIZER_PATH = TOKENIZER_DIR / "tokenizer.json"
TOKENIZER_CONFIG_PATH = TOKENIZER_DIR / "tokenizer_config.json"
PAD_ID, UNK_ID, CLS_ID, SEP_ID = 0, 1, 2, 3
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")

# ---- templates --------------------------------------------------------------------------------------------------

MANOEUVRES: dict[tuple[int, str], str] = {
    (COMMAND_LEFT, "intersection_ahead"): "turn left at the intersection ahead",
    (COMMAND_LEFT, "in_intersection"): "turn left through the intersection",
    (COMMAND_LEFT, "lane_change"): "change to the left lane",
    (COMMAND_LEFT, "road"): "follow the road to the left",
    (COMMAND_STRAIGHT, "intersection_ahead"): "go straight through the intersection ahead",
    (COMMAND_STRAIGHT, "in_intersection"): "go straight through the intersection",
    (COMMAND_STRAIGHT, "lane_change"): "keep straight",
    (COMMAND_STRAIGHT, "road"): "keep straight",
    (COMMAND_RIGHT, "intersection_ahead"): "turn right at the intersection ahead",
    (COMMAND_RIGHT, "in_intersection"): "turn right through the intersection",
    (COMMAND_RIGHT, "lane_change"): "change to the right lane",
    (COMMAND_RIGHT, "road"): "follow the road to the right",
}
UNKNOWN_MANOEUVRE = "follow the route"
CROSSWALK_CLAUSE = "stop for the pedestrian on the crosswalk ahead"
LIGHT_CLAUSES = {LIGHT_RED: "the light is red", LIGHT_YELLOW: "the light is yellow", LIGHT_GREEN: "the light is green"}
LEAD_CLAUSES = {
    "vehicle": "follow the car ahead",
    "vehicle_stopped": "the car ahead is stopped",
    "bicycle": "follow the cyclist ahead",
    "pedestrian": "watch out for the pedestrian ahead",
    "static": "go around the obstacle ahead",
}
CLAUSE_SEPARATOR = ", "

INTERSECTION_LOOKAHEAD = 50.0  # m along the route
LIGHT_LOOKAHEAD = 60.0  # m
LEAD_LOOKAHEAD = 40.0  # m
CROSSWALK_LOOKAHEAD = 40.0  # m
LEAD_CORRIDOR_HALF_WIDTH = 2.0  # m from the route centreline (agent centre)
STOPPED_SPEED = 0.5  # m/s


def all_instruction_texts() -> list[str]:
    """Every text the templates can produce (manoeuvre x compatible clause combinations), sorted."""
    manoeuvres = sorted(set(MANOEUVRES.values()) | {UNKNOWN_MANOEUVRE})
    first = [None, CROSSWALK_CLAUSE, *LIGHT_CLAUSES.values()]
    texts = set()
    for m, a, b in itertools.product(manoeuvres, first, [None, *LEAD_CLAUSES.values()]):
        texts.add(CLAUSE_SEPARATOR.join([x for x in (m, a, b) if x]))
    for m, a, b in itertools.product(manoeuvres, [CROSSWALK_CLAUSE], LIGHT_CLAUSES.values()):
        texts.add(CLAUSE_SEPARATOR.join((m, a, b)))
    return sorted(texts)


@functools.lru_cache(maxsize=1)
def _vocabulary() -> tuple[str, ...]:
    words = set()
    for text in all_instruction_texts():
        words.update(text.replace(",", " , ").split())
    return SPECIAL_TOKENS + tuple(sorted(words))


def vocabulary() -> list[str]:
    """Special tokens then every template word (and ',') in sorted order; the index is the token id."""
    return list(_vocabulary())


# ---- tokenizer --------------------------------------------------------------------------------------------------


def build_tokenizer():
    """A fresh ``tokenizers.Tokenizer`` (WordLevel over :func:`vocabulary`, whitespace/punctuation split,
    ``[CLS] $A [SEP]`` post-processing, a decoder that re-attaches ',' so ``decode(encode(text)) == text``)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    vocab = {w: i for i, w in enumerate(vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", CLS_ID), ("[SEP]", SEP_ID)])
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    return tok


def build_tokenizer_json() -> str:
    """The shipped tokenizer file's exact content (compact JSON, newline-terminated)."""
    return build_tokenizer().to_str(pretty=False) + "\n"


def build_tokenizer_config_json() -> str:
    """``tokenizer_config.json`` naming the special tokens, so ``PreTrainedTokenizerFast.from_pretrained(dir)``
    knows its pad/unk/cls/sep tokens."""
    import json

    config = {"tokenizer_class": "PreTrainedTokenizerFast", "pad_token": "[PAD]", "unk_token": "[UNK]",
              "cls_token": "[CLS]", "sep_token": "[SEP]", "model_max_length": 32, "padding_side": "right"}
    return json.dumps(config, sort_keys=True) + "\n"


def write_tokenizer(directory: str | Path = TOKENIZER_DIR) -> Path:
    """Regenerate ``tokenizer.json`` and ``tokenizer_config.json`` in ``directory`` (run after changing templates:
    ``python -m irlvla_gym.obs.instruction``). Returns the tokenizer.json path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tokenizer.json").write_text(build_tokenizer_json(), encoding="utf-8")
    (directory / "tokenizer_config.json").write_text(build_tokenizer_config_json(), encoding="utf-8")
    return directory / "tokenizer.json"


def load_hf_tokenizer():
    """The shipped tokenizer as a ``transformers.PreTrainedTokenizerFast`` with its special tokens set."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_file=str(TOKENIZER_PATH), pad_token="[PAD]", unk_token="[UNK]",
                                   cls_token="[CLS]", sep_token="[SEP]", model_max_length=32)


@functools.lru_cache(maxsize=1)
def load_tokenizer():
    """The shipped ``tokenizers.Tokenizer`` (loaded once)."""
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(TOKENIZER_PATH))


@functools.lru_cache(maxsize=4096)
def _encode_cached(text: str, length: int) -> bytes:
    ids = load_tokenizer().encode(text).ids
    if len(ids) > length:  # keep [CLS] ... and end with [SEP]
        ids = ids[:length - 1] + [SEP_ID]
    out = np.full(length, PAD_ID, np.int64)
    out[:len(ids)] = ids
    return out.tobytes()


def encode_instruction(text: str, length: int = 32) -> np.ndarray:
    """(length,) int64 token ids ``[CLS] words [SEP] 0 0 ...`` (truncated to end with [SEP] if too long)."""
    return np.frombuffer(_encode_cached(text, int(length)), np.int64).copy()


def instruction_length_groups(instruction_ids: np.ndarray | None, n: int) -> list[np.ndarray]:
    """Row indices of a batch of ``n`` observations grouped by instruction length (number of non-zero token ids of
    the (n, L) ``instruction_ids``), each group sorted; without instructions (None) one group of all rows.

    The VLA encoder trims trailing instruction padding to the longest instruction *of the batch*, and a diffusion
    head cross-attends to every fused token (padding outputs included), so such a plan depends on which scenes share
    its batch. Encoding each group of equal length separately gives every scene exactly the tokens it gets when
    encoded alone (as the leaderboard does one scene at a time).
    """
    if instruction_ids is None:
        return [np.arange(n)]
    lengths = (np.asarray(instruction_ids).reshape(n, -1) != 0).sum(axis=1)
    return [np.flatnonzero(lengths == value) for value in np.unique(lengths)]


def decode_instruction(ids: np.ndarray) -> str:
    """Text from token ids (special tokens and padding dropped)."""
    return load_tokenizer().decode([int(i) for i in np.asarray(ids).reshape(-1)], skip_special_tokens=True)


# ---- scene context ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InstructionContext:
    """What the instruction says: manoeuvre kind ('intersection_ahead', 'in_intersection', 'lane_change', 'road'),
    whether a pedestrian is on a crosswalk ahead, the next light on the route, the lead road user kind or ''."""

    manoeuvre: str
    crosswalk_pedestrian: bool
    light: int
    lead: str


def _route_geometry(scene: Scene) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Route polyline (P, 2) in the scene frame, per-route-lane arc ranges (R, 2) [start, end] along it (m)."""
    lanes = [scene.map.lane_centerlines[int(i)].astype(np.float64) for i in scene.route_lanes]
    lengths = np.array([polyline_length(c) for c in lanes])
    ends = np.cumsum(lengths)
    ranges = np.stack([ends - lengths, ends], axis=1) if len(lanes) else np.zeros((0, 2))
    line = np.concatenate(lanes) if lanes else np.zeros((0, 2))
    return line, ranges, lengths


def _arc_length(line: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Arc length (m,) along ``line`` of the projections of (m, 2) points and their signed lateral offsets (+left).

    Unlike a de-duplicated polyline, ``line`` may hold zero-length segments (lane joints); they are skipped.
    """
    a, seg = line[:-1], np.diff(line, axis=0)
    seg_len2 = np.einsum("ij,ij->i", seg, seg)
    keep = seg_len2 > 1e-10
    seg_len = np.sqrt(seg_len2)
    cum = np.r_[0.0, np.cumsum(seg_len)][:-1]
    a, seg, seg_len2, seg_len, cum = a[keep], seg[keep], seg_len2[keep], seg_len[keep], cum[keep]
    rel = points[:, None, :] - a[None]
    t = np.clip(np.einsum("mij,ij->mi", rel, seg) / seg_len2, 0.0, 1.0)
    dist = np.linalg.norm(rel - t[..., None] * seg[None], axis=-1)
    k = np.argmin(dist, axis=1)
    rows = np.arange(len(points))
    cross = seg[k, 0] * rel[rows, k, 1] - seg[k, 1] * rel[rows, k, 0]
    return cum[k] + t[rows, k] * seg_len[k], np.sign(cross) * dist[rows, k]


def instruction_context(scene: Scene, ego_pose: np.ndarray | None = None, time: float = 0.0,
                        command: int | None = None) -> InstructionContext:
    """Extract the instruction's facts around ``ego_pose`` (scene t0 frame) at ``time`` (see module docs)."""
    pose = as_pose(ego_pose)
    command = scene.command if command is None else int(command)
    mp = scene.map
    line, ranges, _ = _route_geometry(scene)
    route = np.asarray(scene.route_lanes, np.int64)
    manoeuvre, light, lead, crosswalk_pedestrian = "road", LIGHT_NONE, "", False
    heading = np.array([np.cos(pose[2]), np.sin(pose[2])])
    boxes, valid = agents_at_time(scene, time)

    if len(route) and len(line) >= 2 and np.any(np.diff(line, axis=0) != 0):
        s_ego = float(_arc_length(line, pose[None, :2])[0][0])
        ahead = (ranges[:, 1] > s_ego) & (ranges[:, 0] < s_ego + INTERSECTION_LOOKAHEAD)
        junction = ahead & (mp.lane_is_connector[route] | mp.lane_is_intersection[route])
        if junction.any():
            k = int(np.argmax(junction))
            manoeuvre = "in_intersection" if ranges[k, 0] <= s_ego else "intersection_ahead"
        elif command in (COMMAND_LEFT, COMMAND_RIGHT):
            neighbour = mp.lane_left_neighbor if command == COMMAND_LEFT else mp.lane_right_neighbor
            change = (neighbour[route[:-1]] == route[1:]) & ahead[1:]
            if change.any():
                manoeuvre = "lane_change"
        states = light_state_at_time(scene, time)[route]
        # A light stands at the start of a connector / intersection lane (its stop line), else at the lane's end.
        at_junction = mp.lane_is_connector[route] | mp.lane_is_intersection[route]
        light_s = np.where(at_junction, ranges[:, 0], ranges[:, 1])
        upcoming = (states != LIGHT_NONE) & (light_s >= s_ego - 1.0) & (light_s < s_ego + LIGHT_LOOKAHEAD)
        if upcoming.any():
            light = int(states[int(np.argmax(upcoming))])
        if valid.any():
            idx = np.flatnonzero(valid)
            s_agent, lateral = _arc_length(line, boxes[idx, :2])
            gap = s_agent - s_ego
            in_corridor = (gap > 1.0) & (gap <= LEAD_LOOKAHEAD) & (np.abs(lateral) < LEAD_CORRIDOR_HALF_WIDTH)
            in_front = (boxes[idx, :2] - pose[:2]) @ heading > 0.0
            cand = np.flatnonzero(in_corridor & in_front)
            if len(cand):
                j = idx[cand[np.argmin(gap[cand])]]
                lead = _lead_kind(int(scene.agents.category[j]), float(np.hypot(*boxes[j, 6:8])))
        crosswalk_pedestrian = _pedestrian_on_crosswalk_ahead(scene, boxes, valid, pose, heading, line)
    elif valid.any():  # no route: a straight corridor along the ego heading
        rel = boxes[:, :2] - pose[:2]
        lon = rel @ heading
        lat = rel @ np.array([-heading[1], heading[0]])
        cand = np.flatnonzero(valid & (lon > 1.0) & (lon <= LEAD_LOOKAHEAD) & (np.abs(lat) < LEAD_CORRIDOR_HALF_WIDTH))
        if len(cand):
            j = cand[np.argmin(lon[cand])]
            lead = _lead_kind(int(scene.agents.category[j]), float(np.hypot(*boxes[j, 6:8])))
    return InstructionContext(manoeuvre, crosswalk_pedestrian, light, lead)


def _lead_kind(category: int, speed: float) -> str:
    if category == VEHICLE:
        return "vehicle_stopped" if speed < STOPPED_SPEED else "vehicle"
    if category == BICYCLE:
        return "bicycle"
    if category == PEDESTRIAN:
        return "pedestrian"
    return "static" if category in STATIC_CATEGORIES else ""


def _pedestrian_on_crosswalk_ahead(scene: Scene, boxes: np.ndarray, valid: np.ndarray, pose: np.ndarray,
                                   heading: np.ndarray, line: np.ndarray) -> bool:
    """A pedestrian within CROSSWALK_LOOKAHEAD m ahead stands inside a crosswalk that the route crosses."""
    peds = np.flatnonzero(valid & (scene.agents.category == PEDESTRIAN))
    if not len(peds) or scene.map.crosswalks.count == 0:
        return False
    lon = (boxes[peds, :2] - pose[:2]) @ heading
    peds = peds[(lon > 0.0) & (lon <= CROSSWALK_LOOKAHEAD)]
    if not len(peds):
        return False
    import shapely
    from shapely.geometry import LineString

    route_line = LineString(line)
    for polygon in scene.map.crosswalks.to_shapely():
        if polygon.distance(route_line) < 1.0 and shapely.contains_xy(polygon, boxes[peds, 0], boxes[peds, 1]).any():
            return True
    return False


def instruction_text(context: InstructionContext, command: int) -> str:
    """Render an :class:`InstructionContext` with the templates."""
    parts = [UNKNOWN_MANOEUVRE if command == COMMAND_UNKNOWN else MANOEUVRES[(command, context.manoeuvre)]]
    if context.crosswalk_pedestrian:
        parts.append(CROSSWALK_CLAUSE)
    if context.light != LIGHT_NONE:
        parts.append(LIGHT_CLAUSES[context.light])
    if context.lead and len(parts) < 3 and not (context.crosswalk_pedestrian and context.lead == "pedestrian"):
        parts.append(LEAD_CLAUSES[context.lead])
    return CLAUSE_SEPARATOR.join(parts)


def build_instruction(scene: Scene, ego_pose: np.ndarray | None = None, time: float = 0.0,
                      command: int | None = None) -> str:
    """The instruction text for ``scene`` seen from ``ego_pose`` (scene t0 frame, default origin) at ``time`` s.

    ``command`` overrides the scene's command (the closed-loop env may recompute it).
    """
    command = scene.command if command is None else int(command)
    return instruction_text(instruction_context(scene, ego_pose, time, command), command)


class InstructionObservation(ObservationType):
    """Key ``instruction``: (instruction_length,) int64 token ids of :func:`build_instruction`'s text.

    The ids lie in [0, vocabulary size); the text itself is returned by :meth:`text` (envs put it in ``info``).
    """

    key = "instruction"

    def space(self) -> gym.spaces.Dict:
        n = self.config.instruction_length
        return gym.spaces.Dict({"instruction": gym.spaces.Box(0, len(vocabulary()) - 1, (n,), np.int64)})

    def text(self, scene: Scene, ego_pose: np.ndarray | None = None, time: float = 0.0,
             ego_status: EgoStatus | None = None) -> str:
        return build_instruction(scene, ego_pose, time, None if ego_status is None else ego_status.command)

    def observe(self, scene: Scene, ego_pose: np.ndarray | None = None, time: float = 0.0,
                ego_status: EgoStatus | None = None) -> dict[str, np.ndarray]:
        text = self.text(scene, ego_pose, time, ego_status)
        return {"instruction": encode_instruction(text, self.config.instruction_length)}


if __name__ == "__main__":
    print(f"wrote {write_tokenizer()}")
