"""Compiled loops (numba) for the 3D step's per-pixel passes (segments_3d).

Why compiled: the step's cost was the number of whole-image passes (about 125 OpenCV
and numpy passes a frame), not any one of them. A loop that does a step's arithmetic
for each pixel in one pass, a row at a time, does what several of those passes did at a
fraction of the memory traffic; work that concerns the mask's margin only (the depths
nearby, the windows) runs over those pixels only. The whole step went from 15.1 to
7.9 ms at 640x480 with 20 segments on a 2-core AMD EPYC, then on two bands of rows and
with the later loops to 0.17 of the per-segment loop's time (3.8 ms on a faster
machine of that name; README).

What makes them fast (measured while writing them): inner loops over one row's
contiguous slices, branch-free, so that LLVM vectorises them (a per-pixel branch made
the first reach loop 2x slower than OpenCV); bool images read as bytes (a bool array in
a vectorised loop was 4x slower); one pass per function (a variable holding slices of
two memory layouts cannot vectorise: split so, mask_rings went from 0.50 to 0.35 ms);
2D indexing, not a row view per element, where a loop visits scattered pixels (a view
per element made the box ends 4x slower); helpers called per item take and return
scalars, not arrays (a numba call counts references for each array it is handed: about
100 ns a call, which made the component statistics 0.62 instead of 0.14 ms); values a
loop reads from arrays while it stores into others are read into scalars first (numba
tells LLVM nothing about aliasing, so they are read again after every store).

Every loop gives the same values as the OpenCV and numpy calls it replaces, bit for bit,
so the boxes did not change: cv2.addWeighted on float32 is fma(a, alpha, fma(b, beta,
gamma)) in float32 (`_fma32` below: the product of two float32 is exact in float64, so
one float64 sum rounded to float32 gives the fused result), cv2.multiply(z, z, scale=s)
is (s * z) * z, comparisons with NaN are false as in cv2.compare, and window sums of
float32 depths are taken in float64, where they are exact (for depths from 1 cm to 1 km
and windows of up to 8000 pixels), so their order does not matter and they equal
OpenCV's box filters and integral images. One exception: a noise exponent other than 1
or 2 takes libm's powf here, where numpy's float32 power may be its own SIMD one
(AVX-512), which can differ in the last bit. tests/test_segments_3d_kernels.py checks
each loop against its OpenCV or numpy form.

The row loops run on bands of rows at once (RowBands: the calling thread and workers of
the measurer's own, 2 bands by default; each loop's split follows which side finishes
first, and a loop that gains nothing from a worker stays on the calling thread) and
release the GIL; no numba threading layer (OpenMP's threads spin after each loop
and slowed OpenCV's). Helpers are plain njit functions, not inline="always": numba's
own inlining into an entry point stopped its loops from vectorising (the ridge 0.9
against 0.03 ms). They compile on first use and
are cached on disk (numba's cache: next to this file, or the user's cache directory when
that is not writable).
"""

from __future__ import annotations

import os
import threading
import time

import numba
import numpy as np

_JIT = {"nogil": True, "cache": True, "error_model": "numpy"}  # numpy: x / 0 is inf or NaN, as in numpy
_INF = np.float32(np.inf)


def serial(loop, size, *args):
    """Runs a banded loop (its first two arguments: first and past-last row or item) over
    all `size` rows or items on the calling thread."""
    return [(0, size, loop(0, size, *args))]


class RowBands:
    """Runs a banded loop on `threads` bands of rows (or of a list's items) at once: one
    on the calling thread, the others on worker threads; the loops release the GIL. Every
    band writes its own rows only, and a loop that reads its neighbours' rows runs after
    the loop that wrote them, so the result is the serial one, bit for bit, wherever the
    bands are cut. Its own threads, not numba's threading layer: OpenMP's spin after each
    loop and slowed OpenCV's threads, and numba's own layer may not be entered from two
    threads at once. Each worker waits on a lock of its own, not on an executor's queue
    (concurrent.futures' queue, futures and conditions cost 40 us a hand-out against 18).

    A worker starts its band late: it wakes from its lock (30 us on a VM whose idle
    vCPUs halt), and a calling thread that finishes first sleeps too. So per loop the
    calling thread's share of the items follows which side finished first (SHARE_STEP
    per call, from an equal split), and both end about together. A loop too short to
    gain from a worker (banded it took longer than its calling thread's band scaled to
    all items, on NO_GAIN_CALLS more calls than it gained, or its share reached
    MAX_SHARE) runs on
    the calling thread alone, and is tried on bands again once every PROBE_EVERY calls
    (the machine's load changes). A forked child starts its own workers. Returns
    (start, stop, loop's result) per band."""

    SHARE_STEP = 0.02
    MAX_SHARE = 0.9
    NO_GAIN_CALLS = 8
    PROBE_EVERY = 100

    def __init__(self, threads: int) -> None:
        if int(threads) < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        self.threads = int(threads)
        self.shares: dict = {}  # per loop: the calling thread's share of the items (1: serial)
        self._no_gain: dict = {}  # per loop: banded calls that gained nothing less those that did
        self._serial_calls: dict = {}  # per loop on the calling thread alone: calls since it was last tried on bands
        self._workers: list[_BandWorker] = []
        self._pid = -1

    def __call__(self, loop, size, *args):
        bands = min(self.threads, size)
        if bands < 2:
            return serial(loop, size, *args)
        share = self.shares.get(loop, 1 / bands)
        if share >= self.MAX_SHARE:  # on the calling thread alone, but for one call on bands now and then
            calls = self._serial_calls[loop] = self._serial_calls.get(loop, 0) + 1
            if calls < self.PROBE_EVERY:
                return serial(loop, size, *args)
            self._serial_calls[loop], self._no_gain[loop], share = 0, self.NO_GAIN_CALLS - 1, 1 / bands  # a gain keeps it
        if self._pid != os.getpid():  # first use, or a forked child: the parent's workers are not here
            self._workers, self._pid = [_BandWorker() for _ in range(self.threads - 1)], os.getpid()
        first = min(max(round(size * share), 1), size - bands + 1)  # every band at least one item
        cuts = [0] + [first + (size - first) * k // (bands - 1) for k in range(bands)]
        workers = self._workers[: bands - 1]
        start = time.perf_counter()
        for k, worker in enumerate(workers, 1):
            worker.start(loop, (cuts[k], cuts[k + 1]) + args)
        try:
            mine = loop(0, cuts[1], *args)
            own = time.perf_counter() - start
            late = not all(worker.poll() for worker in workers)
        finally:  # the workers write into the caller's buffers: never return before they are done
            results = [worker.wait() for worker in workers]
        for result in results:
            if isinstance(result, _Failed):
                raise result.error
        gained = time.perf_counter() - start < own * size / cuts[1]
        self._no_gain[loop] = max(self._no_gain.get(loop, 0) + (-1 if gained else 1), 0)  # one noisy call decides nothing
        share = min(max(share + (self.SHARE_STEP if late else -self.SHARE_STEP), 1 / self.threads / 2), self.MAX_SHARE)
        self.shares[loop] = 1.0 if self._no_gain[loop] >= self.NO_GAIN_CALLS else share
        return [(0, cuts[1], mine)] + [(cuts[k], cuts[k + 1], results[k - 1]) for k in range(1, bands)]


class _Failed:
    """A band's exception, handed back to the calling thread."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


class _BandWorker:
    """One daemon thread running one band at a time: `start` hands it a loop and its
    arguments (releasing its `go` lock), `wait` blocks on its `done` lock and returns the
    loop's result or a _Failed."""

    def __init__(self) -> None:
        self._go, self._done = threading.Lock(), threading.Lock()
        self._go.acquire()
        self._done.acquire()
        self._job = self._result = None
        self._finished = False
        threading.Thread(target=self._run, name="ovseg_3d", daemon=True).start()

    def start(self, loop, args) -> None:
        self._job = (loop, args)
        self._go.release()

    def poll(self) -> bool:
        """Whether the band is done, without waiting (wait then returns at once)."""
        if not self._finished:
            self._finished = self._done.acquire(blocking=False)
        return self._finished

    def wait(self):
        if not self._finished:
            self._done.acquire()
        self._finished = False
        result, self._result = self._result, None
        return result

    def _run(self) -> None:
        while True:
            self._go.acquire()
            loop, args = self._job
            self._job = None
            try:
                self._result = loop(*args)
            except BaseException as error:  # noqa: BLE001 (handed to the caller, raised there)
                self._result = _Failed(error)
            self._done.release()


@numba.njit(**_JIT)
def _border_rows(y0, y1, height, rim, padded, value):
    """The `rim` rows above the image (by the band of its first row) and below it (by
    the band of its last) set to value: its own function, as a branch before a row
    loop stopped that loop from vectorising (8x slower)."""
    if y0 == 0:
        padded[:rim] = value
    if y1 == height:
        padded[height + rim:] = value


@numba.njit(**_JIT)
def _sorted_pair(a, b):
    return min(a, b), max(a, b)


@numba.njit(**_JIT)
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


@numba.njit(**_JIT)
def _fma32(a, alpha, b, beta, gamma):
    """cv2.addWeighted's float32 result: fma(a, alpha, fma(b, beta, gamma))."""
    inner = np.float32(np.float64(b) * np.float64(beta) + np.float64(gamma))
    return np.float32(np.float64(a) * np.float64(alpha) + np.float64(inner))


def median_and_cuts(raw, finite_padded, smooth_padded, sparse, sigma_at_1m, exponent, slope_per_px, per_px, step_sigmas,
                    kink_sigmas, outlier_sigmas, quantum, step_padded, kink_padded, cut, inward, open_, rows=serial):
    """Step 1 (segments_3d.SegmentMeasurer._smooth_and_cut). Into smooth_padded (H+4 x
    W+4, written inside its 2 px border, NaN there) the 3x3 median of the depth where it
    is valid (0 where not), edges replicated; where that is not above 0 (most of the
    neighbourhood has no depth) the pixel's own raw depth instead, and sparse = 255 there
    (0 elsewhere). Into cut (bool): no valid depth; deeper than a 4-neighbour by more
    than the step tolerance, unless the step repeats the one beyond it; far from its own
    median. Into open_ (bool): inward (mask_rings') above 0 and not cut, the pixels step
    2's components are made of. finite_padded: H+2 x W+2 scratch (float32);
    step_padded and kink_padded: H+4 x W+4 scratch, NaN in the border.

    The noise's sigma at each pixel is sigma_at_1m z^exponent (DepthNoise.sigma's three
    forms, _sigma). Both tolerances are the neighbour's (the nearer pixel's, where there
    is a step): step t(q) = fma(s, slope_per_px, fma(sigma, step_sigmas, 2 quantum)) and
    kink k(q) = fma(s, per_px, fma(sigma, kink_sigmas, 4 quantum)), the second difference
    centred on the neighbour. A row's median and its own tolerances in one pass, the
    edges (which read the neighbours' rows) in a second; rows: serial or a RowBands."""
    height = raw.shape[0]
    cut8 = cut.view(np.uint8)  # bools as bytes: the loops vectorise
    serial(_finite_rows, height, raw, finite_padded)
    rows(_median_and_own_rows, height, raw, finite_padded, smooth_padded, sparse, sigma_at_1m, float(exponent), slope_per_px,
         per_px, step_sigmas, kink_sigmas, outlier_sigmas, quantum, step_padded, kink_padded, cut8)
    rows(_edges, height, smooth_padded, step_padded, kink_padded, cut8, inward, open_.view(np.uint8))


@numba.njit(**_JIT)
def _finite_rows(y0, y1, raw, finite_padded):
    """The valid depth, padded by 1 px replicating the edge."""
    height, width = raw.shape
    for y in range(y0, y1):
        row, out = raw[y], finite_padded[y + 1]
        for x in range(width):
            v = row[x]
            out[x + 1] = v if (v > 0) & (v < _INF) else np.float32(0)
        out[0], out[width + 1] = out[1], out[width]
    if y0 == 0 < y1:
        finite_padded[0] = finite_padded[1]
    if y0 < height == y1:
        finite_padded[height + 1] = finite_padded[height]


@numba.njit(**_JIT)
def _median_and_own_rows(y0, y1, raw, finite_padded, smooth_padded, sparse, sigma_at_1m, exponent, slope_per_px, per_px,
                         step_sigmas, kink_sigmas, outlier_sigmas, quantum, step_padded, kink_padded, cut):
    """Per row: its median, then the pixel's own tolerances, no depth, an outlier."""
    width = raw.shape[1]
    slope, inv, a = np.float32(slope_per_px), np.float32(per_px), np.float32(sigma_at_1m)
    step_s, kink_s, out_s = np.float32(step_sigmas), np.float32(kink_sigmas), np.float32(outlier_sigmas)
    two_q, four_q = np.float32(2 * quantum), np.float32(4 * quantum)
    for y in range(y0, y1):
        r0, r1, r2 = finite_padded[y], finite_padded[y + 1], finite_padded[y + 2]
        row, s, few = raw[y], smooth_padded[y + 2], sparse[y]
        for x in range(width):
            m = _median9(r0[x], r0[x + 1], r0[x + 2], r1[x], r1[x + 1], r1[x + 2], r2[x], r2[x + 1], r2[x + 2])
            empty = not m > 0
            s[x + 2] = row[x] if empty else m
            few[x] = 255 if empty else 0
        t, k, out = step_padded[y + 2], kink_padded[y + 2], cut[y]
        if exponent == 2.0:  # the usual model: its own loop, which vectorises
            for x in range(width):
                z = s[x + 2]
                t[x + 2], k[x + 2], out[x] = _own_pixel(z, (a * z) * z, row[x], slope, inv, step_s, kink_s, out_s, two_q,
                                                        four_q)
        else:
            for x in range(width):
                z = s[x + 2]
                t[x + 2], k[x + 2], out[x] = _own_pixel(z, _sigma(z, a, exponent), row[x], slope, inv, step_s, kink_s,
                                                        out_s, two_q, four_q)


@numba.njit(**_JIT)
def _sigma(z, sigma_at_1m, exponent):
    """DepthNoise.sigma at one depth, in float32 as numpy computes it there: (s z) z,
    s z, or s z^e (libm's powf: numpy's float32 power may be its own SIMD one, which can
    differ in the last bit)."""
    if exponent == 2.0:
        return (sigma_at_1m * z) * z
    if exponent == 1.0:
        return sigma_at_1m * z
    return sigma_at_1m * z ** np.float32(exponent)


@numba.njit(**_JIT)
def _own_pixel(z, sigma, v, slope, inv, step_s, kink_s, out_s, two_q, four_q):
    """A pixel's step and kink tolerances and whether it is cut (no depth, an outlier):
    z its smoothed depth, v its raw one."""
    cut = (((v > 0) & (v < _INF)) ^ True) | (abs(v - z) > _fma32(z, slope, sigma, out_s, two_q))
    return _fma32(z, slope, sigma, step_s, two_q), _fma32(z, inv, sigma, kink_s, four_q), np.uint8(cut)


@numba.njit(**_JIT)
def _edges(y0, y1, smooth_padded, step_padded, kink_padded, cut, inward, open_):
    """Behind a depth edge towards a 4-neighbour, unless the step repeats the one beyond it."""
    width = cut.shape[1]
    for y in range(y0, y1):
        p = y + 2
        up2, up, here, down, down2 = (smooth_padded[p - 2], smooth_padded[p - 1], smooth_padded[p],
                                      smooth_padded[p + 1], smooth_padded[p + 2])
        t_up, t_here, t_down = step_padded[p - 1], step_padded[p], step_padded[p + 1]
        k_up, k_here, k_down = kink_padded[p - 1], kink_padded[p], kink_padded[p + 1]
        out = cut[y]
        for x in range(width):
            i = x + 2
            z = here[i]
            edge = ((down[i] - z) < -t_down[i]) & ((abs((down2[i] - down[i]) - (down[i] - z)) <= k_down[i]) ^ True)
            edge |= ((here[i + 1] - z) < -t_here[i + 1]) & ((abs((here[i + 2] - here[i + 1]) - (here[i + 1] - z)) <= k_here[i + 1]) ^ True)
            edge |= ((up[i] - z) < -t_up[i]) & ((abs((up2[i] - up[i]) - (up[i] - z)) <= k_up[i]) ^ True)
            edge |= ((here[i - 1] - z) < -t_here[i - 1]) & ((abs((here[i - 2] - here[i - 1]) - (here[i - 1] - z)) <= k_here[i - 1]) ^ True)
            out[x] |= np.uint8(edge)
        level, inner = inward[y], open_[y]
        for x in range(width):
            inner[x] = np.uint8(level[x] > 0) & (out[x] ^ np.uint8(1))


def clipped_ids(panoptic, ids, rows=serial):
    """The panoptic image's ids clipped to 0..65535 into ids (uint16), as
    np.clip(panoptic, 0, 65535).astype(np.uint16) does: the node's images are int32, and
    the clip and the cast were two passes and a fresh image a frame."""
    rows(_clipped_id_rows, panoptic.shape[0], panoptic, ids)


@numba.njit(**_JIT)
def _clipped_id_rows(y0, y1, panoptic, ids):
    for y in range(y0, y1):
        source, row = panoptic[y], ids[y]
        for x in range(source.size):
            row[x] = np.uint16(min(max(source[x], 0), 65535))


def mask_rings(ids, radius, ids_padded, runs, inward_padded, inward, ridge, rows=serial):
    """How many 3x3 erosions, up to `radius`, each pixel of the id image survives
    (inward, uint8): the largest r whose (2r+1)^2 window holds its id only, outside the
    image counting as id 0 (so a mask's window may not cross the border; the
    background's may). And ridge: inward above 0 and at its 3x3 maximum.

    Separable: runs holds per row the largest r whose 2r+1 wide row segment holds the
    pixel's id; a window holds one id where every row of it has that id at the column
    and a run of at least r (the shortest of the window's rows' runs). Scratch: ids_padded H+2R x W+2R (uint16), runs H+2R x W
    and inward_padded H+2 x W+2 (uint8). One pass per function: a variable that holds
    slices of two layouts loses its vectorisation."""
    height = ids.shape[0]
    serial(_padded_runs, height, ids, radius, ids_padded, runs)
    rows(_window_runs, height, radius, ids_padded, runs, inward_padded)
    serial(_ridge, height, inward_padded, inward, ridge)


@numba.njit(**_JIT)
def _padded_runs(y0, y1, ids, rim, ids_padded, runs):
    """Rows y0..y1 of ids_padded, then their runs (a row's runs read that row only)."""
    _pad_ids(y0, y1, ids, rim, ids_padded, runs)
    _row_runs(y0, y1, ids.shape[1], rim, ids_padded, runs)


@numba.njit(**_JIT)
def _pad_ids(y0, y1, ids, rim, ids_padded, runs):
    height, width = ids.shape
    _border_rows(y0, y1, height, rim, ids_padded, 0)  # the rows outside: id 0, runs of any length
    _border_rows(y0, y1, height, rim, runs, rim)
    for y in range(y0, y1):
        row, source = ids_padded[y + rim], ids[y]
        for x in range(rim):
            row[x] = 0
            row[width + rim + x] = 0
        for x in range(width):
            row[x + rim] = source[x]


@numba.njit(**_JIT)
def _row_runs(y0, y1, width, rim, ids_padded, runs):
    for y in range(y0, y1):
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
def _window_runs(y0, y1, rim, ids_padded, runs, inward_padded):
    height, width = ids_padded.shape[0] - 2 * rim, runs.shape[1]
    _border_rows(y0, y1, height, 1, inward_padded, 0)
    shortest = np.empty(width, np.uint8)
    for y in range(y0, y1):
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
def _ridge(y0, y1, inward_padded, inward, ridge):
    width = inward.shape[1]
    for y in range(y0, y1):
        up, here, down = inward_padded[y], inward_padded[y + 1], inward_padded[y + 2]
        out, top = inward[y], ridge[y]
        for x in range(width):
            v = here[x + 1]
            peak = _around_max(up, here, down, x)
            out[x] = v
            top[x] = (v > np.uint8(0)) & (v >= peak)


@numba.njit(**_JIT)
def _around_max(up, here, down, x):
    """The largest of the 8 neighbours of here[x + 1] (rows of a padded image)."""
    return max(max(max(up[x], up[x + 1]), max(up[x + 2], here[x])),
               max(max(here[x + 2], down[x]), max(down[x + 1], down[x + 2])))


def margin_candidates(ids, inward, reached, cut, sparse, deep, last_id, seeds_padded, flags, at, kind, rows=serial):
    """The margin pixels (fewer than `deep` rings in, ids 1..last_id) that may be kept
    (segments_3d.SegmentMeasurer._kept_margin): those reached (kind bit 1); those not cut
    and not reached next to a reached pixel further in (bit 2: the 3x3 maximum of the
    reached pixels' ring numbers is above the pixel's own); those not cut and not reached
    in the outermost ring where most of the neighbourhood has no depth (bit 4). Their
    flat indices into `at` (int64), bits into `kind` (uint8), in image order; returns
    how many. Scratch: seeds_padded H+2 x W+2 (uint8), flags H W rounded up to a
    multiple of 8 (uint8)."""
    height = ids.shape[0]
    serial(_reached_rings, height, inward, reached, seeds_padded)
    rows(_margin_flags, height, ids, inward, reached.view(np.uint8), cut.view(np.uint8), sparse, np.uint8(deep), last_id,
         seeds_padded, flags)
    count = 0
    for start, _, found in rows(_nonzero, flags.size // 8, flags, at, kind):  # bands, not pixels
        if 8 * start != count:  # each band wrote from its own first word on: close the gap
            at[count:count + found], kind[count:count + found] = at[8 * start:8 * start + found], kind[8 * start:8 * start + found]
        count += found
    return count


@numba.njit(**_JIT)
def _reached_rings(y0, y1, inward, reached, seeds_padded):
    height, width = inward.shape
    _border_rows(y0, y1, height, 1, seeds_padded, 0)
    for y in range(y0, y1):
        level, on, out = inward[y], reached[y], seeds_padded[y + 1]
        out[0], out[width + 1] = 0, 0
        for x in range(width):
            out[x + 1] = level[x] * np.uint8(on[x])


@numba.njit(**_JIT)
def _margin_flags(y0, y1, ids, inward, reached, cut, sparse, deep, last_id, seeds_padded, flags):
    height, width = ids.shape
    zero = np.uint8(0)
    for y in range(y0, y1):
        up, here, down = seeds_padded[y], seeds_padded[y + 1], seeds_padded[y + 2]
        label, level, on, off, few = ids[y], inward[y], reached[y], cut[y], sparse[y]
        out = flags[y * width:(y + 1) * width]
        for x in range(width):
            peak = _around_max(up, here, down, x)
            v = level[x]
            open_ = (off[x] | on[x]) ^ np.uint8(1)  # bools as bytes (0, 1)
            joined = np.uint8(peak > v) & open_
            alone = np.uint8(v == zero) & np.uint8(few[x] != zero) & open_
            margin = np.uint8(v < deep) & np.uint8(label[x] != 0) & np.uint8(label[x] <= last_id)
            out[x] = (on[x] | (joined << np.uint8(1)) | (alone << np.uint8(2))) * margin
    if y1 == height:
        flags[height * width:] = 0


@numba.njit(**_JIT)
def _nonzero(w0, w1, flags, at, kind):
    """Indices and values of the nonzero bytes of words w0..w1 (eight bytes each: most
    words are 0), into at and kind from index 8 w0 on; returns how many."""
    words = flags.view(np.uint64)
    count = 8 * w0
    for j in range(w0, w1):
        if words[j]:
            for i in range(8 * j, 8 * j + 8):
                at[count] = i
                kind[count] = flags[i]
                count += flags[i] != 0
    return count - 8 * w0


def interior_nearby(smooth_padded, inward, reached, deep, at, reached_sum, reached_count, out, own, rows=serial):
    """At pixels `at` (flat, ascending), the mean smoothed depth (smooth_padded: 2 px
    border) of the reached pixels at least `deep` rings in within `deep` pixels each way
    (cut by the border); where there are none, reached_sum / reached_count there
    (float32 into out); into own the pixel's own smoothed depth. As box filters of that
    size would, but only where asked: the
    window's column sums run down the image one row at a time (in float64, where sums
    of float32 depths are exact, so the order does not matter), and each pixel of `at`
    adds its window's columns when its row comes. In bands of `at` (rows: serial or a
    RowBands), each starting its column sums at its first pixel's row."""
    rows(_interior_nearby, at.size, smooth_padded, inward, reached.view(np.uint8), deep, at, reached_sum.ravel(),
         reached_count.ravel(), out, own)


@numba.njit(**_JIT)
def _interior_nearby(j0, j1, smooth_padded, inward, reached, deep, at, flat_sum, flat_count, out, own):
    if j0 >= j1:
        return
    height, width = inward.shape
    least = np.uint8(deep)
    total, count = np.zeros(width, np.float64), np.zeros(width, np.int32)
    first = at[j0] // width
    for y in range(max(first - deep, 0), min(first + deep, height)):  # rows first - deep .. first + deep - 1
        _slide_interior_rows(smooth_padded[y + 2], inward[y], reached[y], np.uint8(1), smooth_padded[0], inward[0],
                             reached[0], np.uint8(0), least, total, count)
    j = j0
    for y in range(first, height):
        if j == j1:
            break
        # the window's rows move down one: row y + deep comes in, row y - deep - 1 goes
        come, go = min(y + deep, height - 1), max(y - deep - 1, 0)
        _slide_interior_rows(smooth_padded[come + 2], inward[come], reached[come], np.uint8(y + deep < height),
                             smooth_padded[go + 2], inward[go], reached[go], np.uint8((y - deep - 1 >= 0) & (y > first)),
                             least, total, count)
        row_end = (y + 1) * width
        # along the row the window slides too: columns that come in are added, those that
        # go are taken away (float64 sums of float32 depths are exact, so this is the sum
        # from scratch, bit for bit)
        lo, hi = 0, -1  # the columns summed: none yet
        window_sum, window_count = 0.0, 0
        while j < j1 and at[j] < row_end:
            i = at[j]
            x = i - y * width
            own[j] = smooth_padded[y + 2, x + 2]
            new_lo, new_hi = max(x - deep, 0), min(x + deep, width - 1)
            if new_lo > hi:  # no column in common: from scratch
                lo, hi, window_sum, window_count = new_lo, new_lo - 1, 0.0, 0
            for c in range(hi + 1, new_hi + 1):
                window_sum += total[c]
                window_count += count[c]
            for c in range(lo, new_lo):
                window_sum -= total[c]
                window_count -= count[c]
            lo, hi = new_lo, new_hi
            if window_count > 0:
                out[j] = np.float32(window_sum) / np.float32(window_count)
            else:
                out[j] = flat_sum[i] / np.float32(flat_count[i])
            j += 1


@numba.njit(**_JIT)
def _slide_interior_rows(come_padded, come_level, come_on, come_ok, go_padded, go_level, go_on, go_ok, least, total,
                         count):
    """Adds one row's interior depths and count (come, where come_ok) and takes another's
    away (go, where go_ok): one pass, branch-free."""
    come, go = come_padded[2:], go_padded[2:]
    for x in range(total.size):
        take_come = np.uint8(come_level[x] >= least) & come_on[x] & come_ok
        take_go = np.uint8(go_level[x] >= least) & go_on[x] & go_ok
        total[x] += ((np.float64(come[x]) if take_come else 0.0) - (np.float64(go[x]) if take_go else 0.0))
        count[x] += np.int32(take_come) - np.int32(take_go)


def outside_nearby(smooth_padded, ids_padded, rim, inward, at, ring_total, ring_count, out, rows=serial):
    """At pixels `at` (flat), the depth of the surface just outside their mask: over the
    outermost-ring pixels (inward 0) within as many pixels as the pixel is rings in (cut
    by the border), the mean of those pixels' 8 neighbours' smoothed depth that belong
    to another id (float32 into out; NaN for none). smooth_padded: 2 px border of NaN;
    ids_padded: `rim` px border of 0 (mask_rings'). Scratch: ring_total (float32) and
    ring_count (uint8), H x W, written at the ring's pixels only: their neighbours' sum
    (float32, added in the order of _RING_STEPS) and number. The windows' sums are
    float64, exact for float32 depths, so they equal any other order's. rows: serial or
    a RowBands."""
    rows(_ring_neighbours, inward.shape[0], smooth_padded, ids_padded, rim, inward, ring_total, ring_count)
    rows(_outside_windows, at.size, inward, at, ring_total, ring_count, out)


@numba.njit(**_JIT)
def _outside_windows(j0, j1, inward, at, ring_total, ring_count, out):
    height, width = inward.shape
    zero = np.uint8(0)
    for j in range(j0, j1):
        i = at[j]
        y = i // width
        x = i - y * width
        r = np.int64(inward[y, x])
        total, count = 0.0, 0
        for v in range(max(y - r, 0), min(y + r + 1, height)):  # 2D indexing: a row view per row would cost more
            for u in range(max(x - r, 0), min(x + r + 1, width)):
                ring = inward[v, u] == zero
                total += np.float64(ring_total[v, u]) if ring else 0.0
                count += np.int64(ring_count[v, u]) if ring else 0
        out[j] = np.float32(total / np.float64(count))


@numba.njit(**_JIT)
def _ring_neighbours(y0, y1, smooth_padded, ids_padded, rim, inward, ring_total, ring_count):
    width = inward.shape[1]
    for y in range(y0, y1):
        for x in range(width):
            if inward[y, x] == 0:
                own = ids_padded[y + rim, x + rim]
                total, count = np.float32(0), np.uint8(0)
                for dy, dx in _RING_STEPS:
                    z = smooth_padded[y + 2 + dy, x + 2 + dx]
                    ok = (ids_padded[y + rim + dy, x + rim + dx] != own) & (abs(z) < _INF)
                    total += z if ok else np.float32(0)
                    count += np.uint8(ok)
                ring_total[y, x] = total
                ring_count[y, x] = count


_RING_STEPS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


@numba.njit(**_JIT)
def quantile_ranks(counts, cut):
    """segments_3d._quantiles' ranks: per segment, with its values sorted after those of
    the segments before it, the positions of its low end (start + cut) and its high end
    (start + count - 1 - cut), float64, floored and ceiled within all values (below,
    above: int64 [2, n], row 0 the low end) and the fractions between them ([2, n])."""
    n = counts.size
    below, above = np.empty((2, n), np.int64), np.empty((2, n), np.int64)
    fraction = np.empty((2, n), np.float64)
    last = max(np.sum(counts) - 1, 0)
    start = 0
    for s in range(n):
        for end in range(2):
            position = start + cut[s] if end == 0 else (start + counts[s] - 1) - cut[s]
            below[end, s] = min(max(np.int64(np.floor(position)), 0), last)
            above[end, s] = min(max(np.int64(np.ceil(position)), 0), last)
            fraction[end, s] = position - np.floor(position)
        start += counts[s]
    return below, above, fraction


@numba.njit(**_JIT)
def extreme_ranks(counts, below, above):
    """quantile_ranks' positions as extreme_keys' tables hold them: per segment the low
    end's ranks (below, above) counted from its smallest value (from_bottom, [2, n]) and
    the high end's from its largest (from_top), and how many extremes each way the tables
    need (depth); a segment without points gets any row."""
    n = counts.size
    from_bottom, from_top = np.empty((2, n), np.int64), np.empty((2, n), np.int64)
    start, depth = 0, 0
    for s in range(n):
        from_bottom[0, s], from_bottom[1, s] = below[0, s] - start, above[0, s] - start
        top = start + counts[s] - 1
        from_top[0, s], from_top[1, s] = top - below[1, s], top - above[1, s]
        if counts[s] > 0:
            depth = max(depth, from_bottom[0, s], from_bottom[1, s], from_top[0, s], from_top[1, s])
        start += counts[s]
    depth += 1
    for k in range(2):
        for s in range(n):
            from_bottom[k, s] = min(max(from_bottom[k, s], 0), depth - 1)
            from_top[k, s] = min(max(from_top[k, s], 0), depth - 1)
    return from_bottom, from_top, depth


@numba.njit(**_JIT)
def extreme_ends(lowest, highest, from_bottom, from_top, fraction, step, origin, low, high):
    """The box ends ([n, 3] float64 into low and high) from extreme_keys' tables at
    extreme_ranks' ranks (fraction: quantile_ranks'): between the keys below and above each end by its fraction, in
    metres, as numpy computes (key_below + fraction (key_above - key_below) + 0.5) step +
    origin."""
    for axis in range(3):
        for s in range(low.shape[0]):
            below, above = lowest[axis, s, from_bottom[0, s]], lowest[axis, s, from_bottom[1, s]]
            low[s, axis] = (np.float64(below) + fraction[0, s] * np.float64(np.int64(above) - np.int64(below)) + 0.5) \
                * step[axis] + origin[axis]
            below, above = highest[axis, s, from_top[0, s]], highest[axis, s, from_top[1, s]]
            high[s, axis] = (np.float64(below) + fraction[1, s] * np.float64(np.int64(above) - np.int64(below)) + 0.5) \
                * step[axis] + origin[axis]


def extreme_keys(segment, xyz, origin, inverse_step, lowest, highest, rows=serial):
    """Per axis and segment the lowest.shape[2] smallest and largest keys (ascending and
    descending, int32) of its values, a key being int32((value - origin[axis]) *
    inverse_step[axis]) in float32 as numpy computes it (segments_3d._quantiles).
    lowest and highest ([3, segments, depth]) start at the int32 maximum and -1. One
    pass: a value enters a row only when it beats the row's last. In bands of the
    values (rows: serial or a RowBands), the first into lowest and highest, the others
    into tables of their own merged into them after: the smallest keys of two sets are
    the smallest of their smallest, whatever the order."""
    parts = rows(_extreme_key_rows, segment.size, segment, xyz, origin, inverse_step, lowest, highest)
    for start, _, band in parts[1:]:
        _merge_extremes(lowest, highest, *band)


@numba.njit(**_JIT)
def _extreme_key_rows(j0, j1, segment, xyz, origin, inverse_step, lowest, highest):
    if j0 > 0:  # not the first band: tables of its own
        lowest, highest = np.full_like(lowest, np.iinfo(np.int32).max), np.full_like(highest, -1)
    last = lowest.shape[2] - 1
    # each row's last entry, the one a key must beat, in a small table of its own; the
    # three axes of a point in one pass (one segment index read): 0.26 -> 0.18 ms
    lowest_last, highest_last = lowest[:, :, last].copy(), highest[:, :, last].copy()
    xs, ys, zs = xyz[0], xyz[1], xyz[2]
    ox, oy, oz = np.float32(origin[0]), np.float32(origin[1]), np.float32(origin[2])  # scalars: the stores below
    sx, sy, sz = np.float32(inverse_step[0]), np.float32(inverse_step[1]), np.float32(inverse_step[2])  # might alias
    for i in range(j0, j1):
        s = segment[i]
        for axis in range(3):
            if axis == 0:
                key = np.int32((xs[i] - ox) * sx)
            elif axis == 1:
                key = np.int32((ys[i] - oy) * sy)
            else:
                key = np.int32((zs[i] - oz) * sz)
            if key < lowest_last[axis, s]:
                row = lowest[axis, s]
                k = last
                while k > 0 and row[k - 1] > key:
                    row[k] = row[k - 1]
                    k -= 1
                row[k] = key
                lowest_last[axis, s] = row[last]
            if key > highest_last[axis, s]:
                row = highest[axis, s]
                k = last
                while k > 0 and row[k - 1] < key:
                    row[k] = row[k - 1]
                    k -= 1
                row[k] = key
                highest_last[axis, s] = row[last]
    return lowest, highest


@numba.njit(**_JIT)
def _merge_extremes(lowest, highest, band_lowest, band_highest):
    """Another band's tables into lowest and highest: per row, the smallest (largest) of
    both sorted rows, sorted."""
    depth = lowest.shape[2]
    merged = np.empty(depth, np.int32)
    for axis in range(3):
        for s in range(lowest.shape[1]):
            _merge_row(lowest[axis, s], band_lowest[axis, s], merged, 1)
            _merge_row(highest[axis, s], band_highest[axis, s], merged, -1)


@numba.njit(**_JIT)
def _merge_row(row, other, merged, sign):
    """row and other, each sorted (ascending for sign 1, descending for -1): their first
    row.size of the two merged, into row."""
    i = k = 0
    for m in range(row.size):
        if sign * row[i] <= sign * other[k]:
            merged[m] = row[i]
            i += 1
        else:
            merged[m] = other[k]
            k += 1
    row[:] = merged


def component_stats(comp, ids, inward, ridge, raw, stride, deep, size, rows=serial):
    """Per component 0..size-1 (segments_3d.SegmentMeasurer._component_stats), from
    every stride-th pixel each way: its id (segment, int64), the sum of its samples'
    squared ring numbers (score, float64 of float32 squares, as np.bincount adds them),
    its samples at least `deep` rings in or on a ridge (beyond, float64), its deepest
    ring (top, uint8), its nearest and farthest raw depth, and those of its samples at
    its deepest ring (surface_nearest, surface_farthest; float32, NaN for none). In bands
    of sample rows (rows: serial or a RowBands), each into its own arrays, then merged:
    the scores are sums of small integers and the rest minima, maxima and counts, so any
    order of samples gives the same values. The components' pixels all have depth."""
    parts = rows(_component_stats_rows, -(-comp.shape[0] // stride), comp, ids, inward, ridge.view(np.uint8), raw,
                 stride, np.uint8(deep), size)
    stats = parts[0][2]
    for _, _, band in parts[1:]:
        _merge_component_stats(stats, band)
    return stats


@numba.njit(**_JIT)
def _component_stats_rows(r0, r1, comp, ids, inward, ridge, raw, stride, least, size):
    stats = (np.zeros(size, np.int64), np.zeros(size), np.zeros(size), np.zeros(size, np.uint8),
             np.full(size, np.nan, np.float32), np.full(size, np.nan, np.float32), np.full(size, np.nan, np.float32),
             np.full(size, np.nan, np.float32))
    segments, scores, beyonds, tops, nearests, farthests, surface_nearests, surface_farthests = stats
    width = comp.shape[1]
    for y in range(r0 * stride, r1 * stride, stride):
        # a run of one component's samples along the row adds up in registers, then into
        # its arrays: a read-modify-write of the same array element per sample is a chain
        # through memory
        current, segment = 0, 0
        score = beyond = 0.0
        top = np.uint8(0)
        nearest = farthest = surface_nearest = surface_farthest = np.float32(0)
        for x in range(0, width + stride, stride):
            c = comp[y, x] if x < width else 0  # past the row's end: ends its last run
            if c != current:
                if current != 0:
                    k = current
                    (segments[k], scores[k], beyonds[k], tops[k], nearests[k], farthests[k], surface_nearests[k],
                     surface_farthests[k]) = _with_run(
                        segments[k], scores[k], beyonds[k], tops[k], nearests[k], farthests[k], surface_nearests[k],
                        surface_farthests[k], segment, score, beyond, top, nearest, farthest, surface_nearest,
                        surface_farthest)
                current, score, beyond, top = c, 0.0, 0.0, np.uint8(0)
                nearest, farthest = _INF, -_INF
            if c == 0:
                continue
            level, z = inward[y, x], raw[y, x]  # a component's pixels have depth and are a ring in or more
            segment = ids[y, x]
            weight = np.float32(level)
            score += np.float64(weight * weight)
            beyond += 1.0 if (level >= least) | (ridge[y, x] != 0) else 0.0
            nearest, farthest = min(nearest, z), max(farthest, z)
            deeper, same = level > top, level == top
            surface_nearest = z if deeper else (min(surface_nearest, z) if same else surface_nearest)
            surface_farthest = z if deeper else (max(surface_farthest, z) if same else surface_farthest)
            top = max(top, level)
    return stats


@numba.njit(**_JIT)
def _with_run(segment, score, beyond, top, nearest, farthest, surface_nearest, surface_farthest, run_segment, run_score,
              run_beyond, run_top, run_nearest, run_farthest, run_surface_nearest, run_surface_farthest):
    """A component's statistics with a run's (or another band's) added: sums, extremes
    and the deepest ring's range. Scalars in and out: a helper that takes the arrays
    costs a reference count per array and call (0.6 against 0.1 ms for the loop)."""
    nearest, farthest = _widened(nearest, farthest, run_nearest)
    nearest, farthest = _widened(nearest, farthest, run_farthest)
    if run_top > top:
        top, surface_nearest, surface_farthest = run_top, run_surface_nearest, run_surface_farthest
    elif run_top == top:
        surface_nearest, surface_farthest = _widened(surface_nearest, surface_farthest, run_surface_nearest)
        surface_nearest, surface_farthest = _widened(surface_nearest, surface_farthest, run_surface_farthest)
    return run_segment, score + run_score, beyond + run_beyond, top, nearest, farthest, surface_nearest, surface_farthest


@numba.njit(**_JIT)
def _merge_component_stats(stats, band):
    """Another band's component_stats into `stats`."""
    segments, scores, beyonds, tops, nearests, farthests, surface_nearests, surface_farthests = stats
    for k in range(band[0].size):
        if band[3][k] != 0:  # a sample in that band
            (segments[k], scores[k], beyonds[k], tops[k], nearests[k], farthests[k], surface_nearests[k],
             surface_farthests[k]) = _with_run(
                segments[k], scores[k], beyonds[k], tops[k], nearests[k], farthests[k], surface_nearests[k],
                surface_farthests[k], band[0][k], band[1][k], band[2][k], band[3][k], band[4][k], band[5][k], band[6][k],
                band[7][k])


@numba.njit(**_JIT)
def segment_surfaces(segment, score, beyond, nearest, farthest, surface_nearest, surface_farthest, last_id, slope_per_px,
                     sigmas, sigma_at_1m, exponent, two_quantum, accepted, low, high):
    """Step 3 (segments_3d.SegmentMeasurer._segment_surfaces) from component_stats'
    arrays: per segment 1..last_id, of its components with a score, the one with the
    highest (the later component on a tie) is accepted and sets the segment's depth range
    (low, high: float32 [last_id + 1], left as they are for a segment without one: NaN);
    the segment's other scored components are accepted where they have samples beyond the
    margin (beyond > 0) and their depths [nearest, farthest] meet that range widened by
    the step tolerance at each end (float32 as numpy computes it; NaN meets nothing).
    accepted: bool per component, all False to start."""
    best = np.full(last_id + 1, -1, np.int64)
    for c in range(segment.size):
        s = segment[c]
        if score[c] > 0 and 1 <= s <= last_id and (best[s] < 0 or score[c] >= score[best[s]]):
            best[s] = c
    for s in range(1, last_id + 1):
        if best[s] >= 0:
            accepted[best[s]] = True
            low[s], high[s] = surface_nearest[best[s]], surface_farthest[best[s]]
    slope, sig_s, sig, q = np.float32(slope_per_px), np.float32(sigmas), np.float32(sigma_at_1m), np.float32(two_quantum)
    for c in range(segment.size):
        s = segment[c]
        if score[c] > 0 and 1 <= s <= last_id and best[s] != c and beyond[c] > 0:
            near, far = low[s], high[s]
            accepted[c] = ((farthest[c] >= near - _tolerance(near, slope, sig_s, sig, exponent, q))
                           & (nearest[c] <= far + _tolerance(far, slope, sig_s, sig, exponent, q)))


@numba.njit(**_JIT)
def _widened(nearest, farthest, z):
    """[nearest, farthest] widened to take in z (NaN before any)."""
    return (z if not z >= nearest else nearest), (z if not z <= farthest else farthest)


def reach_outwards(comp, accepted, inward, ridge, deep, reached_padded, reached, rows=serial):
    """Step 4a (segments_3d.SegmentMeasurer._reach) into reached (bool) and
    reached_padded (H+2 x W+2, uint8, 0 border): the pixels of accepted components at
    least `deep` rings in or on a ridge, then ring by ring outwards those with a reached
    4-neighbour one ring further in or on the ring before it was grown (never along a
    ring: each ring grows from the state before it). On bands of rows (rows: serial or a
    RowBands): a ring reaches one row further, so each band grows its rows and `deep`
    rows each side of them in a buffer of its own and keeps its own rows, which are then
    the whole image's (the halo's outer rows, which lack their neighbours, may be wrong
    only `deep` rows in after `deep` rings)."""
    height = comp.shape[0]
    rows(_reach_rows, height, comp, accepted.view(np.uint8), inward, ridge.view(np.uint8), deep, reached_padded,
         reached.view(np.uint8))  # bools as bytes vectorise


@numba.njit(**_JIT)
def _reach_rows(y0, y1, comp, accepted, inward, ridge, deep, reached_padded, reached):
    height, width = inward.shape
    first, past = max(y0 - deep, 0), min(y1 + deep, height)  # the band and its halo
    grown = np.zeros((past - first + 2, width + 2), np.uint8)  # 0 border: outside the image or the halo
    on = np.empty((past - first, width), np.uint8)
    row_buffers = np.empty((2, width), np.uint8)
    least = np.uint8(deep)
    for y in range(first, past):
        _seed_row(comp[y], accepted, inward[y], ridge[y], least, on[y - first], grown[y - first + 1])
    for level in range(deep - 1, -1, -1):  # rings, not pixels
        ring = np.uint8(level)
        for k in range(past - first + 1):  # k: the local row
            if k < past - first:
                _grow_row(grown[k], grown[k + 1], grown[k + 2], inward[first + k], on[k], ring, row_buffers[k % 2])
            if k > 0:  # the row above is no longer read: write it back
                _copy_row(row_buffers[(k - 1) % 2], grown[k])
    if y0 == 0:
        reached_padded[0] = 0
    if y1 == height:
        reached_padded[height + 1] = 0
    for y in range(y0, y1):
        local, padded = grown[y - first + 1], reached_padded[y + 1]
        for x in range(width + 2):
            padded[x] = local[x]
        _unpad_row(local, reached[y])


@numba.njit(**_JIT)
def _seed_row(comp, accepted, level, ridge, least, on, out):
    for x in range(comp.size):  # a gather: its own loop, so that the next one vectorises
        on[x] = accepted[np.uintp(comp[x])]
    out[0], out[out.size - 1] = 0, 0
    for x in range(comp.size):
        out[x + 1] = on[x] & (np.uint8(level[x] >= least) | ridge[x])


@numba.njit(**_JIT)
def _grow_row(up, here, down, level, on, ring, out):
    for x in range(level.size):
        near = up[x + 1] | down[x + 1] | here[x] | here[x + 2]
        out[x] = here[x + 1] | (near & on[x] & np.uint8(level[x] == ring))


@numba.njit(**_JIT)
def _copy_row(source, padded):
    for x in range(source.size):
        padded[x + 1] = source[x]


@numba.njit(**_JIT)
def _unpad_row(padded, out):
    for x in range(out.size):
        out[x] = padded[x + 1]


@numba.njit(**_JIT)
def box_samples(reached, inward, ids, deep, last_id, stride, edge_at, at, segs, counts, points):
    """The pixels a box is measured on: every stride-th pixel each way that is reached
    and at least `deep` rings in (its id 1..last_id), in grid order, then the margin's
    kept pixels edge_at. Into `at` their flat indices, into `segs` their segment index
    (id - 1, int32); per segment index into `counts` their number and into `points` the
    depth points on its surface (the interior's sample times stride^2, plus the
    margin's). counts and points start at 0. Returns how many."""
    height, width = ids.shape
    reached8, least = reached.view(np.uint8), np.uint8(deep)
    k = 0
    for y in range(0, height, stride):
        for x in range(0, width, stride):
            s = np.int64(ids[y, x])
            if reached8[y, x] != 0 and inward[y, x] >= least and 1 <= s <= last_id:
                at[k], segs[k] = y * width + x, s - 1
                counts[s - 1] += 1
                k += 1
    for s in range(last_id):
        points[s] = counts[s] * stride * stride
    flat = ids.ravel()
    for i in edge_at:
        s = np.int64(flat[i])
        if 1 <= s <= last_id:  # margin_candidates' pixels all are
            at[k], segs[k] = i, s - 1
            counts[s - 1] += 1
            points[s - 1] += 1
            k += 1
    return k


@numba.njit(**_JIT)
def drop_pixels(at, which, drop):
    """at less its items at positions which[j] where drop[j] (which ascending), in place;
    returns how many are left."""
    kept = k = 0
    for j in range(at.size):
        while k < which.size and which[k] < j:
            k += 1
        if k < which.size and which[k] == j and drop[k]:
            continue
        at[kept] = at[j]
        kept += 1
    return kept


def box_points(at, raw, ray_x, ray_y, reached, reached_sum, reached_count, xyz, rows=serial):
    """The points the box is measured on, into xyz (3 x len(at), float32): x and y on the
    ray at the raw depth, z the depth averaged over the pixel's reached 3x3 neighbours
    and itself where it is not reached (segments_3d.SegmentMeasurer._averaged_depth), in
    float32 as numpy computes them. rows: serial or a RowBands (bands of `at`)."""
    rows(_box_points, at.size, at, raw.ravel(), ray_x, ray_y, reached.ravel(), reached_sum.ravel(), reached_count.ravel(), xyz)


@numba.njit(**_JIT)
def _box_points(j0, j1, at, flat_raw, ray_x, ray_y, flat_reached, flat_sum, flat_count, xyz):
    for j in range(j0, j1):
        i = at[j]
        z = flat_raw[i]
        xyz[0, j] = ray_x[i] * z
        xyz[1, j] = ray_y[i] * z
        alone = not flat_reached[i]
        xyz[2, j] = (flat_sum[i] + (z if alone else np.float32(0))) / np.float32(flat_count[i] + np.uint16(alone))


def reached_sums(raw, reached_padded, depth_padded, reached_sum, reached_count, rows=serial):
    """Per pixel, the raw depth summed over its reached 3x3 neighbours (itself included;
    float32 of a float64 sum, exact for float32 depths, as OpenCV's box filter gives)
    and their number (uint16). reached_padded: reach_outwards' (H+2 x W+2, 0 border);
    depth_padded: H+2 x W+2 scratch (float32). rows: serial or a RowBands."""
    serial(_reached_depth_rows, raw.shape[0], raw, reached_padded, depth_padded)
    rows(_window3_rows, raw.shape[0], depth_padded, reached_padded, reached_sum, reached_count)


@numba.njit(**_JIT)
def _reached_depth_rows(y0, y1, raw, reached_padded, depth_padded):
    _border_rows(y0, y1, raw.shape[0], 1, depth_padded, 0)
    for y in range(y0, y1):
        row, on, out = raw[y], reached_padded[y + 1], depth_padded[y + 1]
        out[0], out[out.size - 1] = 0, 0
        for x in range(row.size):
            out[x + 1] = row[x] if on[x + 1] else np.float32(0)


@numba.njit(**_JIT)
def _window3_rows(y0, y1, depth_padded, reached_padded, reached_sum, reached_count):
    for y in range(y0, y1):  # the row's loop here, not in a helper per row: 0.12 against 0.16 ms
        up, here, down = depth_padded[y], depth_padded[y + 1], depth_padded[y + 2]
        on_up, on_here, on_down = reached_padded[y], reached_padded[y + 1], reached_padded[y + 2]
        total, count = reached_sum[y], reached_count[y]
        for x in range(total.size):
            t = (np.float64(up[x]) + np.float64(up[x + 1]) + np.float64(up[x + 2]) + np.float64(here[x])
                 + np.float64(here[x + 1]) + np.float64(here[x + 2]) + np.float64(down[x]) + np.float64(down[x + 1])
                 + np.float64(down[x + 2]))
            total[x] = np.float32(t)
            count[x] = (np.uint16(on_up[x]) + on_up[x + 1] + on_up[x + 2] + on_here[x] + on_here[x + 1] + on_here[x + 2]
                        + on_down[x] + on_down[x + 1] + on_down[x + 2])


@numba.njit(**_JIT)
def _tolerance(z, slope_per_px, sigmas, sigma_at_1m, exponent, two_quantum):
    """segments_3d.SegmentMeasurer.step_tolerance at one depth, in float32 as numpy
    computes it there (DepthNoise.sigma's three forms)."""
    return z * slope_per_px + sigmas * _sigma(z, sigma_at_1m, exponent) + two_quantum


@numba.njit(**_JIT)
def kept_candidates(at, kind, raw, ids, reached_sum, reached_count, low, high, slope_per_px, sigmas, sigma_at_1m,
                    exponent, two_quantum, kept):
    """Of the margin's candidates (margin_candidates' `at` and `kind`), those kept
    (segments_3d.SegmentMeasurer._kept_margin), their flat indices into `kept` in the
    same order; returns how many. Kept: reached (bit 1); next to reached pixels further
    in (bit 2) with raw depth within the step tolerance of their reached neighbours'
    mean; amid holes (bit 4) with depth within the surface's [low, high] of its segment,
    widened by the step tolerance at each end. Tolerances as numpy computes them
    (float32; comparisons with NaN false)."""
    slope, s, sig, q = np.float32(slope_per_px), np.float32(sigmas), np.float32(sigma_at_1m), np.float32(two_quantum)
    flat_raw, flat_ids = raw.ravel(), ids.ravel()
    flat_sum, flat_count = reached_sum.ravel(), reached_count.ravel()
    count = 0
    for j in range(at.size):
        i, bits = at[j], kind[j]
        keep = (bits & 1) != 0
        if not keep and (bits & 2) != 0:
            z = flat_raw[i]
            mean = flat_sum[i] / np.float32(flat_count[i])
            keep = abs(z - mean) <= _tolerance(z, slope, s, sig, exponent, q)
        if not keep and (bits & 4) != 0:
            z, segment = flat_raw[i], flat_ids[i]
            near, far = low[segment], high[segment]
            keep = ((z >= near - _tolerance(near, slope, s, sig, exponent, q))
                    & (z <= far + _tolerance(far, slope, s, sig, exponent, q)))
        kept[count] = i
        count += keep
    return count


@numba.njit(**_JIT)
def doubtful_pixels(inside, own, slope_per_px, sigmas, sigma_at_1m, exponent, two_quantum, doubtful):
    """Indices j where own[j] is not within half the step tolerance (`sigmas`) at
    inside[j] of inside[j] (NaN: doubtful), into `doubtful`; returns how many."""
    slope, s, sig, q = np.float32(slope_per_px), np.float32(sigmas), np.float32(sigma_at_1m), np.float32(two_quantum)
    count = 0
    for j in range(inside.size):
        z = inside[j]
        near = abs(own[j] - z) <= _tolerance(z, slope, s, sig, exponent, q) / np.float32(2)
        doubtful[count] = j
        count += not near
    return count


@numba.njit(**_JIT)
def nearer_outside(inside, outside, own, slope_per_px, sigmas, sigma_at_1m, exponent, two_quantum, beyond):
    """Per pixel (beyond, bool): the interior's and the outside's depths apart by more
    than the step tolerance at the nearer of them and own depth nearer the outside's
    (where either is NaN, their difference is too: not apart)."""
    slope, s, sig, q = np.float32(slope_per_px), np.float32(sigmas), np.float32(sigma_at_1m), np.float32(two_quantum)
    for j in range(inside.size):
        a, b = inside[j], outside[j]
        apart = abs(a - b) > _tolerance(min(a, b), slope, s, sig, exponent, q)
        beyond[j] = apart & (abs(own[j] - b) < abs(own[j] - a))
