"""Compiled loops (numba) for the 3D step's per-pixel passes (segments_3d).

Why compiled: the step's cost is the number of whole-image passes, not any one of them.
A loop that does a step's arithmetic for each pixel in one pass over a few rows at a
time, written without branches so that LLVM vectorises it, does what several OpenCV
passes did, at a fraction of the memory traffic (step 1: 1.16 ms on one thread against
2.19 ms for the OpenCV passes on two, side by side at 640x480).

Every loop gives the same values as the OpenCV calls it replaces, bit for bit:
cv2.addWeighted on float32 is fma(a, alpha, fma(b, beta, gamma)) in float32 (`_fma32`
below: the product of two float32 is exact in float64, so one float64 sum rounded to
float32 gives the fused result), cv2.multiply(z, z, scale=s) is (s * z) * z, and
comparisons with NaN are false as in cv2.compare. tests/test_segments_3d_kernels.py checks them
against the OpenCV forms.

Loops run on the calling thread (no numba threading layer: the node's other threads and
torch's own pool stay as they are) and release the GIL. They compile on first use and
are cached on disk (numba's cache: next to this file, or the user's cache directory when
that is not writable).
"""

from __future__ import annotations

import numba
import numpy as np

_JIT = {"nogil": True, "cache": True}
_INF = np.float32(np.inf)


@numba.njit(inline="always")
def _sorted_pair(a, b):
    return min(a, b), max(a, b)


@numba.njit(inline="always")
def _median9(a0, a1, a2, a3, a4, a5, a6, a7, a8):
    """The median of nine values by a 19-exchange network (no branches)."""
    a1, a2 = _sorted_pair(a1, a2)
    a4, a5 = _sorted_pair(a4, a5)
    a7, a8 = _sorted_pair(a7, a8)
    a0, a1 = _sorted_pair(a0, a1)
    a3, a4 = _sorted_pair(a3, a4)
    a6, a7 = _sorted_pair(a6, a7)
    a1, a2 = _sorted_pair(a1, a2)
    a4, a5 = _sorted_pair(a4, a5)
    a7, a8 = _sorted_pair(a7, a8)
    a0, a3 = _sorted_pair(a0, a3)
    a5, a8 = _sorted_pair(a5, a8)
    a4, a7 = _sorted_pair(a4, a7)
    a3, a6 = _sorted_pair(a3, a6)
    a1, a4 = _sorted_pair(a1, a4)
    a2, a5 = _sorted_pair(a2, a5)
    a4, a7 = _sorted_pair(a4, a7)
    a4, a2 = _sorted_pair(a4, a2)
    a6, a4 = _sorted_pair(a6, a4)
    a4, a2 = _sorted_pair(a4, a2)
    return a4


@numba.njit(inline="always")
def _fma32(a, alpha, b, beta, gamma):
    """cv2.addWeighted's float32 result: fma(a, alpha, fma(b, beta, gamma))."""
    inner = np.float32(np.float64(b) * np.float64(beta) + np.float64(gamma))
    return np.float32(np.float64(a) * np.float64(alpha) + np.float64(inner))


@numba.njit(**_JIT)
def median_of_depth(raw, finite_padded, smooth_padded, sparse):
    """The 3x3 median of the depth where it is valid (0 where not), edges replicated;
    where it is not above 0 (most of the neighbourhood has no depth) the pixel's own raw
    depth instead, and sparse = 255 there (0 elsewhere). finite_padded: H+2 x W+2 scratch
    (float32); smooth_padded: H+4 x W+4, written inside its 2 px border."""
    height, width = raw.shape
    for y in range(height):  # the valid depth, padded by 1 px replicating the edge
        row, out = raw[y], finite_padded[y + 1]
        for x in range(width):
            v = row[x]
            out[x + 1] = v if (v > 0) & (v < _INF) else np.float32(0)
        out[0], out[width + 1] = out[1], out[width]
    finite_padded[0] = finite_padded[1]
    finite_padded[height + 1] = finite_padded[height]
    for y in range(height):
        r0, r1, r2 = finite_padded[y], finite_padded[y + 1], finite_padded[y + 2]
        row, out, few = raw[y], smooth_padded[y + 2], sparse[y]
        for x in range(width):
            m = _median9(r0[x], r0[x + 1], r0[x + 2], r1[x], r1[x + 1], r1[x + 2], r2[x], r2[x + 1], r2[x + 2])
            empty = not m > 0
            out[x + 2] = row[x] if empty else m
            few[x] = 255 if empty else 0


@numba.njit(**_JIT)
def depth_edge_cuts(raw, smooth_padded, sigma_padded, slope_per_px, per_px, step_sigmas, kink_sigmas,
                    outlier_sigmas, quantum, step_padded, kink_padded, cut):
    """Step 1's cuts (segments_3d.SegmentMeasurer._smooth_and_cut) into cut (bool): no
    valid depth; deeper than a 4-neighbour by more than the step tolerance, unless the
    step repeats the one beyond it; far from its own median. smooth_padded and
    sigma_padded: H+4 x W+4, NaN in the 2 px border (no neighbour there); step_padded and
    kink_padded: scratch of that shape, NaN in the border, the tolerances written inside.

    Both tolerances are the neighbour's (the nearer pixel's, where there is a step): step
    t(q) = fma(s, slope_per_px, fma(sigma, step_sigmas, 2 quantum)) and kink
    k(q) = fma(s, per_px, fma(sigma, kink_sigmas, 4 quantum)), the second difference
    centred on the neighbour."""
    height, width = raw.shape
    slope = np.float32(slope_per_px)
    inv = np.float32(per_px)
    step_s, kink_s, out_s = np.float32(step_sigmas), np.float32(kink_sigmas), np.float32(outlier_sigmas)
    two_q, four_q = np.float32(2 * quantum), np.float32(4 * quantum)
    for y in range(height):  # the pixel's own: tolerances, no depth, an outlier
        p = y + 2
        s, sig, t, k, row, out = smooth_padded[p], sigma_padded[p], step_padded[p], kink_padded[p], raw[y], cut[y]
        for x in range(width):
            i = x + 2
            t[i] = _fma32(s[i], slope, sig[i], step_s, two_q)
            k[i] = _fma32(s[i], inv, sig[i], kink_s, four_q)
            v = row[x]
            out[x] = (((v > 0) & (v < _INF)) ^ True) | (abs(v - s[i]) > _fma32(s[i], slope, sig[i], out_s, two_q))
    for y in range(height):
        p = y + 2
        up2, up, here, down, down2 = (smooth_padded[p - 2], smooth_padded[p - 1], smooth_padded[p],
                                      smooth_padded[p + 1], smooth_padded[p + 2])
        t_up, t_here, t_down = step_padded[p - 1], step_padded[p], step_padded[p + 1]
        k_up, k_here, k_down = kink_padded[p - 1], kink_padded[p], kink_padded[p + 1]
        out = cut[y]
        for x in range(width):
            i = x + 2
            s = here[i]
            edge = ((down[i] - s) < -t_down[i]) & ((abs((down2[i] - down[i]) - (down[i] - s)) <= k_down[i]) ^ True)
            edge |= ((here[i + 1] - s) < -t_here[i + 1]) & ((abs((here[i + 2] - here[i + 1]) - (here[i + 1] - s)) <= k_here[i + 1]) ^ True)
            edge |= ((up[i] - s) < -t_up[i]) & ((abs((up2[i] - up[i]) - (up[i] - s)) <= k_up[i]) ^ True)
            edge |= ((here[i - 1] - s) < -t_here[i - 1]) & ((abs((here[i - 2] - here[i - 1]) - (here[i - 1] - s)) <= k_here[i - 1]) ^ True)
            out[x] |= edge




@numba.njit(**_JIT)
def mask_rings(ids, radius, ids_padded, runs, inward_padded, inward, ridge):
    """How many 3x3 erosions, up to `radius`, each pixel of the id image survives
    (inward, uint8): the largest r whose (2r+1)^2 window holds its id only, outside the
    image counting as id 0 (so a mask's window may not cross the border; the
    background's may). And ridge: inward above 0 and at its 3x3 maximum.

    Separable: runs holds per row the largest r whose 2r+1 wide row segment holds the
    pixel's id; a window holds one id where every row of it has that id at the column
    and a run of at least r (the shortest of the window's rows' runs). Scratch: ids_padded H+2R x W+2R (uint16), runs H+2R x W
    and inward_padded H+2 x W+2 (uint8). One pass per function: a variable that holds
    slices of two layouts loses its vectorisation."""
    _pad_ids(ids, radius, ids_padded, runs)
    _row_runs(ids.shape[0], ids.shape[1], radius, ids_padded, runs)
    _window_runs(ids.shape[0], ids.shape[1], radius, ids_padded, runs, inward_padded)
    _ridge(inward_padded, inward, ridge)


@numba.njit(**_JIT)
def _pad_ids(ids, rim, ids_padded, runs):
    height, width = ids.shape
    for y in range(rim):  # the rows outside: id 0, runs of any length
        ids_padded[y] = 0
        ids_padded[height + rim + y] = 0
        runs[y] = rim
        runs[height + rim + y] = rim
    for y in range(height):
        row, source = ids_padded[y + rim], ids[y]
        for x in range(rim):
            row[x] = 0
            row[width + rim + x] = 0
        for x in range(width):
            row[x + rim] = source[x]


@numba.njit(**_JIT)
def _row_runs(height, width, rim, ids_padded, runs):
    for y in range(height):
        row, run = ids_padded[y + rim], runs[y + rim]
        for x in range(width):
            run[x] = 0
        for r in range(1, rim + 1):
            before = np.uint8(r - 1)
            left, mid, right = row[rim - r:rim - r + width], row[rim:rim + width], row[rim + r:rim + r + width]
            for x in range(width):
                c = mid[x]
                run[x] += np.uint8((left[x] == c) & (right[x] == c) & (run[x] == before))


@numba.njit(**_JIT)
def _window_runs(height, width, rim, ids_padded, runs, inward_padded):
    inward_padded[0] = 0
    inward_padded[height + 1] = 0
    shortest = np.empty(width, np.uint8)
    for y in range(height):
        p = y + rim
        count = inward_padded[y + 1]
        run_here = runs[p]
        for x in range(width + 2):
            count[x] = 0
        for x in range(width):
            shortest[x] = run_here[x]
        for r in range(1, rim + 1):
            before, least = np.uint8(r - 1), np.uint8(r)
            above, centre, below = ids_padded[p - r], ids_padded[p], ids_padded[p + r]
            run_above, run_below = runs[p - r], runs[p + r]
            for x in range(width):
                c = centre[x + rim]
                shortest[x] = min(shortest[x], min(run_above[x], run_below[x]))
                count[x + 1] += np.uint8((above[x + rim] == c) & (below[x + rim] == c) & (shortest[x] >= least)
                                         & (count[x + 1] == before))


@numba.njit(**_JIT)
def _ridge(inward_padded, inward, ridge):
    height, width = inward.shape
    for y in range(height):
        up, here, down = inward_padded[y], inward_padded[y + 1], inward_padded[y + 2]
        out, top = inward[y], ridge[y]
        for x in range(width):
            v = here[x + 1]
            peak = max(max(max(up[x], up[x + 1]), max(up[x + 2], here[x])),
                       max(max(here[x + 2], down[x]), max(down[x + 1], down[x + 2])))
            out[x] = v
            top[x] = (v > np.uint8(0)) & (v >= peak)
