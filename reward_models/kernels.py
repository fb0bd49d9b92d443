"""Numba kernels for the reward world model's parameter-free plan features (drop-ins for :mod:`reward_models.features`).

:func:`map_lookup_fast` reproduces :func:`reward_models.features.map_lookup` and :func:`pose_features_fast` reproduces
:func:`reward_models.features.pose_features` (same columns, ``POSE_FEATURES`` order) in one single-threaded pass that
loops over scenes, plans and poses and writes straight into a preallocated float32 output.
:func:`plan_inputs_fast` additionally builds the (B, K, 10 F) input of ``RewardWorldModel.score`` (the flattened pose
features, their max and their min over time) in the same pass.

Agreement: the float operations of the torch reference are replayed in float32 in the same order; the map lookup
and the small kernels are bit-exact (``fastmath=False``). The pose kernel lets LLVM contract and reassociate
(``fastmath`` without the no-NaN / no-inf assumptions: ~30 % faster), so its outputs agree with the reference to
~1e-5 relative (tests: 2e-5 + 1e-5 x |value|). ``hypot`` is evaluated in float64 and rounded once (as torch does),
ties in the ``min`` reductions pick the first index (torch's CPU rule), ``torch.remainder`` is ``fmod`` plus the
sign fix. The cosines and sines are taken from torch itself (``torch.cos`` / ``torch.sin`` are SLEEF
implementations whose last bit differs from libm's), computed on a (B, K, T, 2) [yaw, midpoint yaw] array that a
small kernel prepares.

Lookup layout: both implementations give table l at cell (i, j) by default, and the interleaved layout the first
checkpoints were trained with under ``legacy_layout=True`` (see :func:`reward_models.features.map_lookup`).

Agent forecasts: with an ``agents_future`` entry in ``obs`` ((B, N, 8, 4) [x, y, vx, vy], from
:mod:`reward_models.forecast`) the agent columns use it instead of constant velocity, as the torch reference does.

Compilation: all kernels are ``@numba.njit(cache=True)``; the first call in a fresh environment compiles them
(a few seconds) and writes the machine code to ``__pycache__``; later processes load it from there. Call
:func:`warmup` to pay that cost up front.
"""

from __future__ import annotations

import functools
import math

import numba
import numpy as np
import torch

from reward_models.features import (CENTRE_OFFSET, EGO_RADIUS, FIELD_GRID, FRONT, NUM_POSE_FEATURES, NUM_POSES,
                                    PLAN_DT, REAR, WIDTH, BevGeometry, FieldGrid, MapLookup)

_F32 = np.float32
_PI = _F32(math.pi)
_TWO_PI = _F32(2.0 * math.pi)
_ZERO = _F32(0.0)
_ONE = _F32(1.0)
_HALF = _F32(0.5)
_TWO = _F32(2.0)
_BIG = _F32(1e3)
_DT = _F32(PLAN_DT)
_CO = _F32(CENTRE_OFFSET)
_EGO_R = _F32(EGO_RADIUS)
_FRONT_GAP = _F32(FRONT - CENTRE_OFFSET)
_HL = _F32((FRONT + REAR) / 2.0)  # ego box half length / width (agent_geometry="box")
_HW = _F32(WIDTH / 2.0)
_EPS9 = _F32(1e-9)
_EPS6 = _F32(1e-6)
# box points (centre, fl, fr, rl, rr) in the rear-axle frame, float32 as in features._box_points
_LX = np.array([CENTRE_OFFSET, FRONT, FRONT, -REAR, -REAR], dtype=np.float32)
_LY = np.array([0.0, WIDTH / 2, -WIDTH / 2, WIDTH / 2, -WIDTH / 2], dtype=np.float32)
_SEG_BITS = 12
_NONE_KEY = (1 << 20) << _SEG_BITS
_NB = 5  # box points
_NC = 7  # BEV scene channels
_KIN0 = 11  # first BEV column
_TAIL0 = _KIN0 + 2 * _NB * _NC  # in_view column
_NF = NUM_POSE_FEATURES
_NF_COMPACT = _NF - 2 * _NB * _NC + 4 * _NC  # with the BEV samples reduced to their extrema (ModelConfig.bev_samples)

_JIT = dict(cache=True, fastmath=False, nogil=True, error_model="numpy")
_INLINE = dict(_JIT, inline="always")  # helpers: inlined at the numba IR level (no call / refcount overhead)


@numba.njit(**_INLINE)
def _hyp(x, y):
    """float32 hypot, rounded once from float64 (matches torch.hypot on float32)."""
    xd = np.float64(x)
    yd = np.float64(y)
    return np.float32(math.sqrt(xd * xd + yd * yd))


@numba.njit(**_INLINE)
def _hyp32(x, y):
    """float32 hypot in float32 arithmetic (the pose kernel: within an ulp of torch.hypot, faster)."""
    return np.float32(math.sqrt(x * x + y * y))


@numba.njit(**_INLINE)
def _wrap(a):
    """torch.remainder(a + pi, 2 pi) - pi in float32."""
    v = a + _PI
    if v >= _ZERO and v < _TWO_PI:
        m = v  # fmod(v, 2 pi) = v
    elif v < _ZERO and v > -_TWO_PI:
        m = v + _TWO_PI  # fmod(v, 2 pi) = v < 0 -> v + 2 pi (rounded as torch does)
    elif v >= _TWO_PI and v < _F32(2.0) * _TWO_PI:
        m = v - _TWO_PI  # exact (Sterbenz), = fmod
    else:
        m = np.float32(np.fmod(np.float64(v), np.float64(_TWO_PI)))  # fmod is exact
        if m != _ZERO and (m < _ZERO):
            m = m + _TWO_PI
    return m - _PI


# ---- map lookup ------------------------------------------------------------------------------------------------

@numba.njit(**_JIT)
def _map_lookup_kernel(mp, mmask, idx, x_max, y_half, res, cap, win, legacy_layout, nearest, seg_a, seg_b,
                       seg_flags):
    B = mp.shape[0]
    P = seg_a.shape[1] // (idx.shape[0] - 1)
    Lm1 = idx.shape[0] - 1
    H = nearest.shape[2]
    W = nearest.shape[3]
    reach = cap + res
    scale = _F32(2.0) * cap + _F32(2.0) * res
    q_scale = _F32(1 << 20)
    qmax = (1 << 20) - 1
    keys = np.empty((3, H, W), dtype=np.int64)
    for b in range(B):
        keys[:] = _NONE_KEY
        for p in range(P):
            f_lane = mp[b, p, 0, 4] > 0.5
            f_conn = mp[b, p, 0, 5] > 0.5
            lane = mmask[b, p] and (f_lane or f_conn)
            route = lane and mp[b, p, 0, 7] > 0.5
            red = lane and mp[b, p, 0, 8] > 0.5
            for s in range(Lm1):
                seg = p * Lm1 + s
                ax = mp[b, p, idx[s], 0]
                ay = mp[b, p, idx[s], 1]
                bx = mp[b, p, idx[s + 1], 0]
                by = mp[b, p, idx[s + 1], 1]
                seg_a[b, seg, 0] = ax
                seg_a[b, seg, 1] = ay
                seg_b[b, seg, 0] = bx
                seg_b[b, seg, 1] = by
                for c in range(7):
                    seg_flags[b, seg, c] = mp[b, p, 0, 4 + c]
                if not lane:
                    continue
                mx = (ax + bx) / _TWO
                my = (ay + by) / _TWO
                fi = math.floor((x_max - mx) / res)
                fj = math.floor((y_half - my) / res)
                if not (fi > -1e6 and fi < 1e6 and fj > -1e6 and fj < 1e6):
                    continue
                ic = np.int64(fi)
                jc = np.int64(fj)
                abx = bx - ax
                aby = by - ay
                len2 = abx * abx + aby * aby
                if len2 < _EPS9:
                    len2 = _EPS9
                for di in range(-win, win + 1):
                    i = ic + di
                    if i < 0 or i >= H:
                        continue
                    px = x_max - (np.float32(i) + _HALF) * res
                    rx = px - ax
                    for dj in range(-win, win + 1):
                        j = jc + dj
                        if j < 0 or j >= W:
                            continue
                        py = y_half - (np.float32(j) + _HALF) * res
                        ry = py - ay
                        u = (rx * abx + ry * aby) / len2
                        if u < _ZERO:
                            u = _ZERO
                        elif u > _ONE:
                            u = _ONE
                        dist = _hyp(rx - u * abx, ry - u * aby)
                        if not dist < reach:
                            continue
                        q = np.int64(dist / scale * q_scale)
                        if q < 0:
                            q = 0
                        elif q > qmax:
                            q = qmax
                        key = (q << _SEG_BITS) + seg
                        if key < keys[0, i, j]:
                            keys[0, i, j] = key
                        if route and key < keys[1, i, j]:
                            keys[1, i, j] = key
                        if red and key < keys[2, i, j]:
                            keys[2, i, j] = key
        mask = (1 << _SEG_BITS) - 1
        if legacy_layout:
            # features.map_lookup stacks the 3 flat (B*H*W,) tables on dim 1 and views the (B*H*W, 3) result as
            # (B, 3, H, W): flat entry q of a scene's (3, H, W) block holds table q % 3 at cell q // 3
            for q in range(3 * H * W):
                r = q // 3
                k = keys[q - 3 * r, r // W, r % W]
                l = q // (H * W)
                rem = q - l * (H * W)
                nearest[b, l, rem // W, rem % W] = (k & mask) if k < _NONE_KEY else -1
        else:
            for l in range(3):
                for i in range(H):
                    for j in range(W):
                        k = keys[l, i, j]
                        nearest[b, l, i, j] = (k & mask) if k < _NONE_KEY else -1


def _count_real(mask: np.ndarray) -> int:
    return max(int(mask.sum(1).max()) if mask.size else 0, 1)


def map_lookup_arrays(mp: np.ndarray, mmask: np.ndarray, grid: FieldGrid = FIELD_GRID, legacy_layout: bool = False
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Numpy :func:`reward_models.features.map_lookup`: (B, P, L, 11) float32 polylines + (B, P) bool mask ->
    nearest (B, 3, H, W) int64, a (B, S, 2), b (B, S, 2), flags (B, S, 7) float32 (S = P' x segments per polyline,
    P' the largest number of real polylines in the batch).

    Entry [b, l, i, j] is table l (lane, route, red) at cell (i, j). ``legacy_layout=True`` reproduces
    ``features.map_lookup(legacy_layout=True)``, the interleaved layout of the first checkpoints (entry
    [b, l, i, j] is table (l*H*W + i*W + j) % 3 at cell (l*H*W + i*W + j) // 3).
    """
    mp = np.ascontiguousarray(mp, dtype=np.float32)
    mmask = np.ascontiguousarray(mmask, dtype=np.bool_)
    B, _, L0 = mp.shape[:3]
    P = _count_real(mmask)
    if mp.shape[1] < P:  # never for obs-builder outputs; keep the torch slicing semantics
        P = mp.shape[1]
    idx = np.array(list(range(0, L0 - 1, 2)) + [L0 - 1], dtype=np.int64)
    S = P * (len(idx) - 1)
    H, W = grid.shape
    nearest = np.empty((B, 3, H, W), dtype=np.int64)
    a = np.empty((B, S, 2), dtype=np.float32)
    b = np.empty((B, S, 2), dtype=np.float32)
    flags = np.empty((B, S, 7), dtype=np.float32)
    win = int(math.ceil((grid.cap + grid.res) / grid.res + 0.5))
    _map_lookup_kernel(mp, mmask, idx, _F32(grid.x_max), _F32(grid.y_half), _F32(grid.res), _F32(grid.cap), win,
                       legacy_layout, nearest, a, b, flags)
    return nearest, a, b, flags


_TORCH_DTYPES = {np.float32: torch.float32, np.int64: torch.int64, np.bool_: torch.bool, np.uint8: torch.uint8}


def _np(t: torch.Tensor | np.ndarray, dtype) -> np.ndarray:
    """Contiguous numpy array of ``dtype`` (zero-copy for contiguous CPU tensors / arrays of that dtype)."""
    if isinstance(t, torch.Tensor):
        if t.dtype == _TORCH_DTYPES[dtype] and t.device.type == "cpu" and t.is_contiguous() and not t.requires_grad:
            return t.numpy()
        t = t.detach().cpu().numpy()
    return np.ascontiguousarray(t, dtype=dtype)


def map_lookup_fast(mp: torch.Tensor | np.ndarray, mmask: torch.Tensor | np.ndarray,
                    grid: FieldGrid = FIELD_GRID, legacy_layout: bool = False) -> MapLookup:
    """Drop-in for :func:`reward_models.features.map_lookup` (CPU torch tensors, zero-copy from the numpy outputs;
    ``legacy_layout``: see :func:`map_lookup_arrays`)."""
    nearest, a, b, flags = map_lookup_arrays(_np(mp, np.float32), _np(mmask, np.bool_), grid, legacy_layout)
    return MapLookup(torch.from_numpy(nearest), torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(flags))


# ---- pose features ---------------------------------------------------------------------------------------------

@numba.njit(**_JIT)
def _yaws_kernel(plans, out):
    """out (B, K, T, 2) = [yaw, midpoint yaw to the previous pose (0 before the first)]."""
    B, K, T = plans.shape[0], plans.shape[1], plans.shape[2]
    for b in range(B):
        for k in range(K):
            prev = _ZERO
            for t in range(T):
                yaw = plans[b, k, t, 2]
                out[b, k, t, 0] = yaw
                out[b, k, t, 1] = prev + _wrap(yaw - prev) / _TWO
                prev = yaw


@numba.njit(**_INLINE)
def _floor(x):
    """floor of a float32 |x| < 2**24 as int64 (no libm call)."""
    i = np.int64(x)
    if np.float32(i) > x:
        i -= 1
    return i


@numba.njit(**_INLINE)
def _div(x, d, inv, exact):
    """x / d, as x * (1 / d) where that reciprocal is exact (d a power of two): the same float32 result."""
    return x * inv if exact else x / d


@numba.njit(**_INLINE)
def _bilinear(X, Y, ra, span, rs, inv_span, inv_rs, pow2, half_w, half_h, Wb, Hb):
    """grid_sample (bilinear, align_corners=False, zeros padding) set-up at ego-frame (X, Y) (BevGeometry.to_grid,
    unnormalise, floor, weights). Returns (mode, x0, y0, nw, ne, sw, se): mode 0 = every neighbour outside (all
    samples 0), 1 = all 4 inside, 2 = some inside."""
    gx = _div(-Y, rs, inv_rs, pow2)
    gy = _div(_TWO * (ra - X), span, inv_span, pow2) - _ONE
    ix = (gx + _ONE) * half_w - _HALF
    iy = (gy + _ONE) * half_h - _HALF
    if not (ix > -1.0 and ix < Wb and iy > -1.0 and iy < Hb):
        return 0, 0, 0, _ZERO, _ZERO, _ZERO, _ZERO
    x0 = _floor(ix)
    y0 = _floor(iy)
    w = ix - np.float32(x0)
    e = _ONE - w
    n = iy - np.float32(y0)
    s = _ONE - n
    mode = 1 if (x0 >= 0 and x0 + 1 < Wb and y0 >= 0 and y0 + 1 < Hb) else 2
    return mode, x0, y0, s * e, s * w, n * e, n * w


@numba.njit(**_INLINE)
def _clamp(x, lo, hi):
    if x < lo:
        x = lo
    if x > hi:
        x = hi
    return x


@numba.njit(**_INLINE)
def _box_sep(lon, lat, cos_d, sin_d, half_len, half_wid):  # pragma: no cover - compiled
    """features.box_separation for one (pose, agent) pair (float32)."""
    cd = abs(cos_d)
    sd = abs(sin_d)
    g1 = abs(lon) - (_HL + cd * half_len + sd * half_wid)
    g2 = abs(lat) - (_HW + sd * half_len + cd * half_wid)
    a_lon = cos_d * lon + sin_d * lat
    a_lat = cos_d * lat - sin_d * lon
    g3 = abs(a_lon) - (half_len + cd * _HL + sd * _HW)
    g4 = abs(a_lat) - (half_wid + sd * _HL + cd * _HW)
    return max(max(g1, g2), max(g3, g4))


@numba.njit(**dict(_JIT, fastmath={"nsz", "arcp", "contract", "afn", "reassoc"}))
def _pose_kernel(plans, cosa, sina, ego, bev, bscale, agents, amask, future, has_future, nearest, seg_a, seg_b,
                 seg_flags, prm, pow2, extras, compact, box, out):
    ra, rb, rs, span, x_max, y_half, res, cap = prm[0], prm[1], prm[2], prm[3], prm[4], prm[5], prm[6], prm[7]
    lx = _LX
    ly = _LY
    B, K, T = plans.shape[0], plans.shape[1], plans.shape[2]
    F = _NF  # full per-pose width; the output row has FO per pose (_NF, or _NF_COMPACT with ``compact``)
    FO = _NF_COMPACT if compact else _NF
    scratch = np.empty(T * F, dtype=np.float32)
    Hb = bev.shape[2]
    Wb = bev.shape[3]
    half_w = np.float32(Wb) / _TWO
    half_h = np.float32(Hb) / _TWO
    inv_rs = _ONE / rs
    inv_span = _ONE / span
    inv_res = _ONE / res
    Hg = nearest.shape[2]
    Wg = nearest.shape[3]
    # real agents come first: the torch reference keeps the first max-count slots
    NA = 0
    for b in range(amask.shape[0]):
        cnt = 0
        for j in range(amask.shape[1]):
            if amask[b, j]:
                cnt += 1
        NA = max(NA, cnt)
    NA = min(max(NA, 1), agents.shape[1])
    # per-scene buffers
    hs = np.empty(3, dtype=np.float32)  # speeds of the history steps 0..2 -> use 1, 2
    hy = np.empty(3, dtype=np.float32)
    sp = np.empty(T + 3, dtype=np.float32)  # speed[0..T+2] over the 11 steps (index = step)
    yr = np.empty(T + 3, dtype=np.float32)
    acc = np.empty(T + 2, dtype=np.float32)
    ag_x = np.empty((T, max(NA, 1)), dtype=np.float32)
    ag_y = np.empty((T, max(NA, 1)), dtype=np.float32)
    ag_vx = np.empty((T, max(NA, 1)), dtype=np.float32)
    ag_vy = np.empty((T, max(NA, 1)), dtype=np.float32)
    ag_r = np.empty(max(NA, 1), dtype=np.float32)
    ag_c = np.empty((T, max(NA, 1)), dtype=np.float32)  # agent heading per time (box geometry)
    ag_s = np.empty((T, max(NA, 1)), dtype=np.float32)
    close_within = _ONE if box else _F32(3.0)
    cand_d = np.empty(4, dtype=np.float32)
    cand_s = np.empty(4, dtype=np.int64)
    cand_tx = np.empty(4, dtype=np.float32)
    cand_ty = np.empty(4, dtype=np.float32)
    mres = np.empty((3, 4), dtype=np.float32)  # [dist, tx, ty, found] per lookup
    for b in range(B):
        # history poses t-1.5 .. t0 (ego[8:20])
        for i in range(3):
            dx = ego[b, 8 + 3 * (i + 1)] - ego[b, 8 + 3 * i]
            dy = ego[b, 9 + 3 * (i + 1)] - ego[b, 9 + 3 * i]
            dyaw = ego[b, 10 + 3 * (i + 1)] - ego[b, 10 + 3 * i]
            hs[i] = _hyp(dx, dy) / _DT
            hy[i] = _wrap(dyaw) / _DT
        hx3 = ego[b, 17]
        hy3 = ego[b, 18]
        hyaw3 = ego[b, 19]
        for t in range(T):
            tt = np.float32(t + 1) * _DT
            for j in range(NA):
                if has_future:  # a per-scene forecast (reward_models.forecast): [x, y, vx, vy] per agent and time
                    ag_x[t, j] = future[b, j, t, 0]
                    ag_y[t, j] = future[b, j, t, 1]
                    ag_vx[t, j] = future[b, j, t, 2]
                    ag_vy[t, j] = future[b, j, t, 3]
                else:
                    ag_x[t, j] = agents[b, j, 0] + tt * agents[b, j, 4]
                    ag_y[t, j] = agents[b, j, 1] + tt * agents[b, j, 5]
                    ag_vx[t, j] = agents[b, j, 4]
                    ag_vy[t, j] = agents[b, j, 5]
                if box:  # along the velocity when faster than 1 m/s, else the observed heading
                    v = _hyp32(ag_vx[t, j], ag_vy[t, j])
                    if v > _ONE:
                        ag_c[t, j] = ag_vx[t, j] / v
                        ag_s[t, j] = ag_vy[t, j] / v
                    else:
                        ag_c[t, j] = agents[b, j, 2]
                        ag_s[t, j] = agents[b, j, 3]
        for j in range(NA):
            ag_r[j] = _HALF * _hyp32(agents[b, j, 6], agents[b, j, 7])
        bv = bev[b]
        for k in range(K):
            orow = scratch if compact else out[b, k]
            # kinematics: steps 0..10 of the 12-pose sequence; we need steps 1..10
            sp[0] = hs[0]
            sp[1] = hs[1]
            sp[2] = hs[2]
            yr[0] = hy[0]
            yr[1] = hy[1]
            yr[2] = hy[2]
            px, py, pyaw = hx3, hy3, hyaw3
            for t in range(T):
                x = plans[b, k, t, 0]
                y = plans[b, k, t, 1]
                yaw = plans[b, k, t, 2]
                sp[3 + t] = _hyp(x - px, y - py) / _DT
                yr[3 + t] = _wrap(yaw - pyaw) / _DT
                px, py, pyaw = x, y, yaw
            for i in range(T + 2):
                acc[i] = (sp[i + 1] - sp[i]) / _DT
            prev_cx = _CO
            prev_cy = _ZERO
            mx_prev = _ZERO
            my_prev = _ZERO
            for t in range(T):
                base = t * F
                x = plans[b, k, t, 0]
                y = plans[b, k, t, 1]
                c = cosa[b, k, t, 0]
                s = sina[b, k, t, 0]
                tt = np.float32(t + 1) * _DT
                speed = sp[3 + t]
                yrate = yr[3 + t]
                orow[base + 0] = tt / _F32(4.0)
                orow[base + 1] = x / _F32(20.0)
                orow[base + 2] = y / _F32(5.0)
                orow[base + 3] = c
                orow[base + 4] = s
                orow[base + 5] = speed / _F32(10.0)
                orow[base + 6] = acc[2 + t] / _F32(3.0)
                orow[base + 7] = (speed * yrate) / _F32(3.0)
                orow[base + 8] = yrate
                orow[base + 9] = (yrate - yr[2 + t]) / _DT
                orow[base + 10] = ((acc[2 + t] - acc[1 + t]) / _DT) / _F32(5.0)
                # BEV samples at the pose's box points and at the midpoint pose's
                mx = (x + mx_prev) / _TWO
                my = (y + my_prev) / _TWO
                mx_prev = x
                my_prev = y
                cm = cosa[b, k, t, 1]
                sm = sina[b, k, t, 1]
                cx = _ZERO
                cy = _ZERO
                for q in range(2 * _NB):
                    p = q % _NB
                    if q < _NB:
                        X = (x + c * lx[p]) - s * ly[p]
                        Y = (y + s * lx[p]) + c * ly[p]
                        if q == 0:
                            cx = X
                            cy = Y
                    else:
                        X = (mx + cm * lx[p]) - sm * ly[p]
                        Y = (my + sm * lx[p]) + cm * ly[p]
                    o = base + _KIN0 + q * _NC
                    mode, x0, y0, nw, ne, sw, se = _bilinear(X, Y, ra, span, rs, inv_span, inv_rs, pow2, half_w,
                                                             half_h, Wb, Hb)
                    # raw-byte rasters: the 1/255 goes into the 4 weights, not into every sample
                    nw, ne, sw, se = nw * bscale, ne * bscale, sw * bscale, se * bscale
                    if mode == 0:
                        for ch in range(_NC):
                            orow[o + ch] = _ZERO
                    elif mode == 1:
                        for ch in range(_NC):
                            v = _F32(bv[ch, y0, x0]) * nw + _F32(bv[ch, y0, x0 + 1]) * ne
                            v = v + _F32(bv[ch, y0 + 1, x0]) * sw
                            orow[o + ch] = v + _F32(bv[ch, y0 + 1, x0 + 1]) * se
                    else:
                        in_w = x0 >= 0
                        in_e = x0 + 1 < Wb
                        in_n = y0 >= 0
                        in_s = y0 + 1 < Hb
                        for ch in range(_NC):
                            v_nw = _F32(bv[ch, y0, x0]) if (in_n and in_w) else _ZERO
                            v_ne = _F32(bv[ch, y0, x0 + 1]) if (in_n and in_e) else _ZERO
                            v_sw = _F32(bv[ch, y0 + 1, x0]) if (in_s and in_w) else _ZERO
                            v_se = _F32(bv[ch, y0 + 1, x0 + 1]) if (in_s and in_e) else _ZERO
                            orow[o + ch] = v_nw * nw + v_ne * ne + v_sw * sw + v_se * se
                col = base + _TAIL0
                in_view = (cx < ra) and (cx > -rb) and (abs(cy) < rs)
                orow[col] = _ONE if in_view else _ZERO
                # agents, constant velocity
                best = _BIG
                best_j = 0
                n_close = 0
                fgap = _BIG
                for j in range(NA):
                    rx = ag_x[t, j] - cx
                    ry = ag_y[t, j] - cy
                    if amask[b, j]:
                        lon = c * rx + s * ry
                        if box:
                            clear = _box_sep(lon, c * ry - s * rx, ag_c[t, j] * c + ag_s[t, j] * s,
                                             ag_s[t, j] * c - ag_c[t, j] * s, agents[b, j, 6] / _TWO,
                                             agents[b, j, 7] / _TWO)
                        else:
                            clear = (_hyp32(rx, ry) - ag_r[j]) - _EGO_R
                        if lon > _ZERO:
                            lat = c * ry - s * rx
                            if abs(lat) < _F32(1.25) + agents[b, j, 7] / _TWO:
                                gap = (lon - agents[b, j, 6] / _TWO) - _FRONT_GAP
                                if gap < fgap:
                                    fgap = gap
                    else:
                        clear = _BIG
                    if j == 0:
                        best = clear
                    elif clear < best:
                        best = clear
                        best_j = j
                    if clear < close_within:
                        n_close += 1
                rx = ag_x[t, best_j] - cx
                ry = ag_y[t, best_j] - cy
                n_lon = c * rx + s * ry
                n_lat = c * ry - s * rx
                v_lon = c * ag_vx[t, best_j] + s * ag_vy[t, best_j]
                closing = (speed - v_lon) * (_ONE if n_lon > _ZERO else _ZERO)
                fgap = _clamp(fgap, _F32(-5.0), _F32(60.0))
                ttc = (fgap if fgap > _ZERO else _ZERO) / (speed if speed > _HALF else _HALF)
                if ttc > _F32(5.0):
                    ttc = _F32(5.0)
                orow[col + 1] = _clamp(best, _F32(-5.0), _F32(30.0)) / _F32(10.0)
                orow[col + 2] = _clamp(n_lon, _F32(-30.0), _F32(30.0)) / _F32(10.0)
                orow[col + 3] = _clamp(n_lat, _F32(-15.0), _F32(15.0)) / _F32(5.0)
                orow[col + 4] = _clamp(closing, _F32(-20.0), _F32(20.0)) / _F32(10.0)
                orow[col + 5] = fgap / _F32(20.0)
                orow[col + 6] = ttc
                orow[col + 7] = np.float32(n_close)
                # map: the segments listed in the 4 cells around the centre, exact distances
                fi = _div(x_max - cx, res, inv_res, pow2) - _HALF
                fj = _div(y_half - cy, res, inv_res, pow2) - _HALF
                valid = fi >= -1.0 and fi < Hg and fj >= -1.0 and fj < Wg
                i0 = _floor(fi) if valid else -10
                j0 = _floor(fj) if valid else -10
                lane_seg = -1
                for l in range(3):
                    for q in range(4):
                        i = i0 + (q >> 1)
                        j = j0 + (q & 1)
                        seg = -1
                        if valid and i >= 0 and i < Hg and j >= 0 and j < Wg:
                            seg = nearest[b, l, i, j]
                        cand_s[q] = seg
                        if seg < 0:
                            cand_d[q] = _BIG
                            cand_tx[q] = _ZERO
                            cand_ty[q] = _ZERO
                            continue
                        ax = seg_a[b, seg, 0]
                        ay = seg_a[b, seg, 1]
                        abx = seg_b[b, seg, 0] - ax
                        aby = seg_b[b, seg, 1] - ay
                        len2 = abx * abx + aby * aby
                        if len2 < _EPS9:
                            len2 = _EPS9
                        rx = cx - ax
                        ry = cy - ay
                        u = (rx * abx + ry * aby) / len2
                        if u < _ZERO:
                            u = _ZERO
                        elif u > _ONE:
                            u = _ONE
                        cand_d[q] = _hyp(rx - u * abx, ry - u * aby)
                        cand_tx[q] = abx
                        cand_ty[q] = aby
                    kq = 0
                    bd = cand_d[0]
                    for q in range(1, 4):
                        if cand_d[q] < bd:
                            bd = cand_d[q]
                            kq = q
                    chosen = cand_s[kq]
                    found = bd < cap and chosen >= 0
                    if found:
                        tx = cand_tx[kq]
                        ty = cand_ty[kq]
                        norm = _hyp(tx, ty)
                        if norm < _EPS6:
                            norm = _EPS6
                        mres[l, 0] = bd
                        mres[l, 1] = tx / norm
                        mres[l, 2] = ty / norm
                        mres[l, 3] = _ONE
                        if l == 0:
                            lane_seg = chosen
                    else:
                        mres[l, 0] = cap
                        mres[l, 1] = _ZERO
                        mres[l, 2] = _ZERO
                        mres[l, 3] = _ZERO
                if mres[1, 3] > _HALF:
                    rdx = mres[1, 1]
                    rdy = mres[1, 2]
                else:
                    rdx = c
                    rdy = s
                progress = (cx - prev_cx) * rdx + (cy - prev_cy) * rdy
                prev_cx = cx
                prev_cy = cy
                orow[col + 8] = mres[0, 0] / _TWO
                orow[col + 9] = c * mres[0, 1] + s * mres[0, 2]
                orow[col + 10] = c * mres[0, 2] - s * mres[0, 1]
                orow[col + 11] = seg_flags[b, lane_seg, 3] if lane_seg >= 0 else _ZERO
                orow[col + 12] = seg_flags[b, lane_seg, 1] if lane_seg >= 0 else _ZERO
                orow[col + 13] = mres[1, 0] / _TWO
                orow[col + 14] = c * mres[1, 1] + s * mres[1, 2]
                orow[col + 15] = mres[2, 0] / _TWO
                orow[col + 16] = progress / _F32(5.0)
            if compact:  # the 70 BEV samples -> per channel max / min over the 5 box points, at pose and midpoint
                dst = out[b, k]
                for t in range(T):
                    src = t * F
                    d0 = t * FO
                    for f in range(_KIN0):
                        dst[d0 + f] = orow[src + f]
                    for w in range(2):
                        for ch in range(_NC):
                            hi = orow[src + _KIN0 + w * _NB * _NC + ch]
                            lo = hi
                            for p in range(1, _NB):
                                v = orow[src + _KIN0 + (w * _NB + p) * _NC + ch]
                                if v > hi:
                                    hi = v
                                if v < lo:
                                    lo = v
                            dst[d0 + _KIN0 + w * _NC + ch] = hi
                            dst[d0 + _KIN0 + (2 + w) * _NC + ch] = lo
                    for f in range(_NF - _TAIL0):
                        dst[d0 + _KIN0 + 4 * _NC + f] = orow[src + _TAIL0 + f]
                orow = dst
            if extras:
                for f in range(FO):
                    hi = orow[f]
                    lo = hi
                    for t in range(1, T):
                        v = orow[t * FO + f]
                        if v > hi:
                            hi = v
                        if v < lo:
                            lo = v
                    orow[T * FO + f] = hi
                    orow[(T + 1) * FO + f] = lo


@functools.lru_cache(maxsize=8)
def _geometry_params(geom: BevGeometry) -> tuple[np.ndarray, bool]:
    """Kernel constants of a BEV geometry (and the lookup grid), and whether its divisions are by powers of 2."""
    g = FIELD_GRID
    span = _F32(geom.range_ahead + geom.range_behind)
    pow2 = all(math.frexp(float(v))[0] == 0.5 for v in (_F32(geom.range_side), span, _F32(g.res)))
    prm = np.array([geom.range_ahead, geom.range_behind, geom.range_side, span, g.x_max, g.y_half, g.res, g.cap],
                   dtype=np.float32)
    prm.setflags(write=False)
    return prm, pow2


def _run_pose_kernel(plans, obs, geom: BevGeometry, lookup, extras: bool, compact: bool = False,
                     agent_geometry: str = "circle") -> torch.Tensor:
    p = plans.detach()
    if p.device.type != "cpu" or p.dtype != torch.float32:
        p = p.to("cpu", torch.float32)
    p = p.contiguous()
    B, K, T, _ = p.shape
    if T != NUM_POSES:
        raise ValueError(f"plans must have {NUM_POSES} poses, got shape {tuple(p.shape)}")
    plans_np = p.numpy()
    yaws = np.empty((B, K, T, 2), dtype=np.float32)
    _yaws_kernel(plans_np, yaws)
    yt = torch.from_numpy(yaws)
    cos, sin = torch.cos(yt).numpy(), torch.sin(yt).numpy()  # (B, K, T, 2) each: [pose, midpoint]
    if lookup is None:
        lookup = obs.get("map_lookup")
    if lookup is None:
        nearest, sa, sb, sf = map_lookup_arrays(_np(obs["map"], np.float32), _np(obs["map_mask"], np.bool_))
    else:
        nearest, sa, sb, sf = (_np(lookup.nearest, np.int64), _np(lookup.a, np.float32), _np(lookup.b, np.float32),
                               _np(lookup.flags, np.float32))
    amask = _np(obs["agents_mask"], np.bool_)
    agents = _np(obs["agents"], np.float32)
    F = _NF_COMPACT if compact else _NF
    out = np.empty((B, K, (T + 2) * F if extras else T * F), dtype=np.float32)
    future = obs.get("agents_future")
    has_future = future is not None
    future = _np(future, np.float32) if has_future else np.zeros((1, 1, T, 4), np.float32)
    bev_t = obs["bev"]
    if isinstance(bev_t, torch.Tensor) and bev_t.dtype == torch.uint8:  # raw bytes: scaled by 1/255 when sampled
        bev, bscale = _np(bev_t, np.uint8), _F32(1.0 / 255.0)  # (the model's encoding converts small batches once)
    else:
        bev, bscale = _np(bev_t, np.float32), _ONE
    prm, pow2 = _geometry_params(geom)
    _pose_kernel(plans_np, cos, sin, _np(obs["ego"], np.float32), bev, bscale, agents, amask, future, has_future,
                 nearest, sa, sb, sf, prm, pow2, extras, compact, agent_geometry == "box", out)
    return torch.from_numpy(out)


def scene_channels(bev: torch.Tensor) -> torch.Tensor:
    """(B, 8, H, W) uint8 raster -> (B, 7, H, W) float32 in [0, 1]: the scene channels the plan features sample."""
    return torch.from_numpy(np.multiply(_np(bev, np.uint8)[:, :_NC], _F32(1.0 / 255.0), dtype=np.float32))


def pose_features_fast(plans: torch.Tensor, obs: dict[str, torch.Tensor], geom: BevGeometry = BevGeometry(),
                       lookup: MapLookup | None = None, agent_geometry: str = "circle") -> torch.Tensor:
    """Drop-in for :func:`reward_models.features.pose_features`: (B, K, 8, NUM_POSE_FEATURES) float32 (CPU).

    ``lookup`` (or ``obs["map_lookup"]``) is a :class:`~reward_models.features.MapLookup`; built here when absent.
    ``agent_geometry``: ``"circle"`` or ``"box"`` (see the reference).
    """
    out = _run_pose_kernel(plans, obs, geom, lookup, extras=False, agent_geometry=agent_geometry)
    B, K = out.shape[:2]
    return out.view(B, K, NUM_POSES, NUM_POSE_FEATURES)


def plan_inputs_fast(plans: torch.Tensor, obs: dict[str, torch.Tensor], geom: BevGeometry = BevGeometry(),
                     lookup: MapLookup | None = None, compact: bool = False,
                     agent_geometry: str = "circle") -> torch.Tensor:
    """(B, K, 10 F) ``[feats.flatten(2), feats.amax(2), feats.amin(2)]``, the input ``RewardWorldModel.score``
    builds from :func:`pose_features`, in one pass. ``compact``: the features first go through
    :func:`reward_models.model.compact_bev_samples` (F = 56 instead of 98)."""
    return _run_pose_kernel(plans, obs, geom, lookup, extras=True, compact=compact, agent_geometry=agent_geometry)


def pool_bev(bev: torch.Tensor, factor: int = 4) -> torch.Tensor:
    """(B, C, H, W) uint8 raster -> (B, C, H / factor, W / factor) float32 block means scaled to [0, 1]: the same
    as ``avg_pool2d(bev.float() / 255, factor)`` up to float rounding, without the float copy of the raster (two
    integer sums over rows then columns)."""
    B, C, H, W = bev.shape
    if H % factor or W % factor:
        raise ValueError(f"pool_bev: raster {H} x {W} is not divisible by {factor}")
    rows = bev.reshape(B, C, H // factor, factor, W).sum(3, dtype=torch.int32)
    sums = rows.reshape(B, C, H // factor, W // factor, factor).sum(-1)
    return sums.to(torch.float32) * (1.0 / (factor * factor * 255))


def warmup() -> None:
    """Compile (or load from the on-disk cache) every kernel with the argument types the wrappers use."""
    B, K = 1, 2
    mp = np.zeros((B, 2, 20, 11), dtype=np.float32)
    mp[0, 0, :, 0] = np.arange(20, dtype=np.float32)
    mp[0, 0, :, 4] = 1.0
    mm = np.array([[True, False]])
    lk = map_lookup_fast(mp, mm)
    obs = {"bev": torch.zeros(B, 8, 128, 128), "ego": torch.zeros(B, 21), "agents": torch.zeros(B, 2, 14),
           "agents_mask": torch.tensor([[True, False]]), "map": torch.from_numpy(mp),
           "map_mask": torch.from_numpy(mm)}
    plans = torch.zeros(B, K, NUM_POSES, 3)
    pose_features_fast(plans, obs, lookup=lk)
    plan_inputs_fast(plans, obs, lookup=lk)
    plan_inputs_fast(plans, dict(obs, agents_future=torch.zeros(B, 2, NUM_POSES, 4)), lookup=lk, compact=True)
    plan_inputs_fast(plans, dict(obs, bev=torch.zeros(B, 8, 128, 128, dtype=torch.uint8)), lookup=lk, compact=True)


__all__ = ["map_lookup_arrays", "map_lookup_fast", "pose_features_fast", "plan_inputs_fast", "pool_bev",
           "scene_channels", "warmup"]
