"""The burned-in text stage: find text in every frame and cover it.

    stage = TextStage(mode="redact-all")             # or "redact-phi" with PhiTerms
    for out in stage.stream(frames): ...             # same frames, in order, text covered
    out = stage.process_image(rgb)                   # a still
    report = stage.close()                           # TextReport: counts, never text

Video, with static-overlay tracking. The first frame is detected whole. After that, text can
only appear where the picture changes, and burned-in text then stays put, so every frame gets a
cheap check at half resolution: edges that have been still for three frames (an edge, at the
same grey level, in this frame and the two before; a moving picture's edges are not) and were
not still the frame before are new; they are counted per tile (128 frame pixels), outside the
boxes already tracked. The frames are held in groups of `key_interval`; at the end of a group
(a key frame):

- each tracked box whose text changed since it was found (a running clock, a counter, text
  that went away, something passing in front; judged on its glyph pixels, so that a moving
  picture behind unchanged text does not count) is detected again on the key frame; a box
  whose text did not change is still there, and is kept without detection;
- each tile with new still edges during the group is detected on the key frame (around the
  clusters of those edges, not the whole tile), and, when
  those edges are gone from the key frame (text that came and went inside the group), on the
  frame of the group where most of them appeared;
- every frame of the group is covered with the boxes tracked at its start, and each box found
  during the group on the frames where its glyphs are (`_present`; a frame either side unless
  it plainly shows the picture without them, and throughout where that cannot be told), so a box that appears, changes or goes between two
  key frames is covered on every frame it is on (fail closed). The group's last two frames
  are held over to the next group and covered by both groups' boxes (new text's edges are
  still only from its third frame); at the end of a file, tiles with any new edges in its
  last two frames are detected on the last frame.

Text shown for one or two frames (an 80 ms flash at 25 fps) never has still edges; a flash
check (`_flash_mask`) looks, on every frame, for edge pixels that jumped away from the picture
and back while the picture there stood still, and detects around them on the frame they were
shown, right away. A flash over a part of the picture that moves is not seen. A group holds
`key_interval` + 2 frames, so the producer must hand a new array for each frame (decoders and
the face stage do).
"""

from __future__ import annotations

import contextlib
import itertools
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

from dicom_deid.text.ink import tighten
from dicom_deid.text.phi import PhiTerms
from dicom_deid.text.redact import fill_colour, integer_boxes, redact

if TYPE_CHECKING:
    from dicom_deid.text.ppocr import TextDetector

MODES = ("redact-all", "redact-phi", "off")
DEFAULT_KEY_INTERVAL = 16
TILE = 64              # tile side in the half-resolution edge map (128 frame pixels)
EDGE_LEVEL = 40        # grey-level step (3x3 morphological gradient) that counts as an edge
NEW_EDGES = 28         # new edge pixels in a tile (half resolution) that make it changed: a word
                       # of 10 px text has more; chance meetings of a moving picture's edges
                       # that stay three frames measured 8-25 on the 720p benchmark clip
MARGIN = 32            # frame pixels added around a cluster of new edges before it is detected
LINK = 9               # half-resolution pixels that join new edges into one cluster (a word)
HOLD = 2               # frames of a group held over to the next (text is seen 2 frames late)
STILL_LEVEL = 4        # grey-level change at an edge pixel between two frames that is still "still"
STILL_UPSCALE = 1.5    # a still's second detection, at this times the frame's scale
GLYPH_CELL = 8         # half-resolution cell (16 frame pixels) for a lone character's edges
GLYPH_EDGES = 12       # new edges in one such cell that make its tile changed
FINE_RECT = 112        # a region check finding nothing in a rectangle up to this side (frame
FINE_MARGIN = 8        # frame pixels around the new edges in that retry
FINE_SCALE = 8.0       # pixels) is done again at this scale (at least twice the frame's)
FLASH = 2              # text shown for up to this many frames is looked for as a flash
FLASH_STEP = 60        # grey-level jump (half resolution) of a flashed glyph pixel, in and out
FLASH_SAME = 16        # grey-level change that still counts as "the same picture"
FLASH_EDGES = 40       # flashed edge pixels in a tile that make it detected on the flash frame
GLYPH_STEP = 40        # grey-level change at a glyph pixel of a tracked box that counts
ABSENT = 0.4          # share of a new box's glyph pixels (at its busiest frame) that keep their
                      # grey level on a frame where its text is there: a ticking clock keeps most
SETTLE_FRAMES = 3      # frames well away from a new box's text compared with a frame next to it
SETTLE_SAME = 6        # mean grey-level change at its glyph pixels that is the same picture
MIN_CHANGED = 20       # pixels a new box's text must change to be judged by them
GLYPH_CHANGE = 0.03    # share of a tracked box's glyph pixels changed that says its text changed


@dataclass
class TextReport:
    """What the text stage did to one file: counts only (no text, no positions)."""

    mode: str
    frames: int = 0
    key_frames: int = 0
    region_checks: int = 0
    boxes_found: int = 0
    boxes_kept: int = 0          # redact-phi: read and judged not identifying
    frames_redacted: int = 0
    boxes_redacted: int = 0      # summed over frames
    area_max: float = 0.0        # largest share of one frame covered (box areas summed)
    area_mean: float = 0.0

    def as_dict(self) -> dict:
        out = asdict(self)
        out["area_max"] = round(self.area_max, 5)
        out["area_mean"] = round(self.area_mean, 5)
        return out

    def summary(self) -> str:
        return (f"{self.frames} frame(s), {self.frames_redacted} with text covered, "
                f"{self.key_frames} key frame(s), {self.region_checks} region check(s)")


def _union(*sets: np.ndarray) -> np.ndarray:
    parts = [s for s in sets if s is not None and len(s)]
    if not parts:
        return np.zeros((0, 4), np.float32)
    boxes = np.concatenate([p[:, :4] for p in parts]).astype(np.float32)
    # The same box found again (a static overlay on every key frame) is covered once.
    return np.unique(np.round(boxes), axis=0)


def _colours(rgb: np.ndarray, cover: np.ndarray) -> list[np.ndarray]:
    return [fill_colour(rgb, box) for box in integer_boxes(cover, rgb.shape)]


def _glyphs(crop: np.ndarray) -> np.ndarray:
    """The pixels of a box that are its text: the smaller of the two grey classes (Otsu),
    without its rim where the box has room (anti-aliased rims take the background's colour)."""
    if crop.size < 4:
        return np.zeros(crop.shape, bool)
    _, fg = cv2.threshold(crop, 0, 1, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    if fg.mean() > 0.5:
        fg = 1 - fg
    core = cv2.erode(fg, np.ones((3, 3), np.uint8))
    return (core if core.sum() >= 0.3 * fg.sum() else fg).astype(bool)


def _text_changed(now: np.ndarray, reference: tuple[np.ndarray, np.ndarray]) -> bool:
    """Whether a tracked box's text changed (a clock ticked, the text went, something passed
    in front of it): compared on its glyph pixels only. The rest of a box over a moving
    picture changes all the time while its text stays; comparing the whole box sent such
    boxes to the detector at every key frame (round 1: most of the region checks' cost)."""
    pixels, glyphs = reference
    if not glyphs.any():
        return bool(cv2.absdiff(now, pixels).mean() > GLYPH_STEP / 4)
    if (cv2.absdiff(now, pixels)[glyphs] > GLYPH_STEP).mean() > GLYPH_CHANGE:
        return True
    # Strokes can also be added where the old glyphs were not (a 5 that became a 6 keeps
    # most of its pixels): pixels of the glyphs' grey level that were not there before.
    level = int(np.median(pixels[glyphs]))
    like_now = cv2.absdiff(now, np.full_like(now, level)) <= GLYPH_STEP // 2
    like_before = cv2.absdiff(pixels, np.full_like(pixels, level)) <= GLYPH_STEP // 2
    near = cv2.dilate(glyphs.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    added = int((like_now & ~like_before & ~near).sum())
    return added > max(3, GLYPH_CHANGE * glyphs.sum())


def _tile_counts(mask: np.ndarray, cell: int = TILE) -> np.ndarray:
    """Set pixels of a half-resolution 0/1 mask per cell x cell square, over the TILE grid
    (the mask taken as padded with zeros to whole tiles).

    From the mask's integral image: summing a reshaped padded copy with numpy cost 1.3 ms a
    frame at 720p for the glyph cells (the text stage's largest cost after the detector on
    text_cost.py's clip); the integral is exact and a tenth of that.
    """
    h, w = mask.shape
    ty, tx = -(-h // TILE) * (TILE // cell), -(-w // TILE) * (TILE // cell)
    total = cv2.integral(mask, sdepth=cv2.CV_32S)
    ys = np.minimum(np.arange(ty + 1) * cell, h)
    xs = np.minimum(np.arange(tx + 1) * cell, w)
    corners = total[ys[:, None], xs[None, :]]
    return corners[1:, 1:] - corners[:-1, 1:] - corners[1:, :-1] + corners[:-1, :-1]


def _flash_mask(recent: list[tuple], span: int) -> np.ndarray | None:
    """Edge pixels of text shown for `span` frames (1 or 2) and gone again, or None where
    there are too few to matter. `recent`: per frame up to now, (half-resolution grey, edges,
    no edge within a pixel, jump from the frame before); the frames shown end one before the
    last. Such text never has edges that are still for three frames, so the still-edge check
    cannot see it (round 2 left it as a known gap). Its pixels jump away from the picture by
    FLASH_STEP and back, the shown frames agree with each other, and the frames before and
    after agree (the picture did not move there): a moving picture's pixels do not come back,
    so motion does not trigger, and text flashed over a part of the picture that moves is not
    seen either. And its edges are new: no edge within a pixel on the frames before and after;
    a textured picture that flickers under compression has its edges throughout (without
    this, the check fired 350 times in 60 frames of text_cost.py's clip).
    """
    before, first, after = recent[-span - 2], recent[-span - 1], recent[-1]
    # cheapest and most selective first: most frames stop here
    mask = first[1] & first[3] & after[3]
    if cv2.countNonZero(mask) < FLASH_EDGES:
        return None
    mask &= before[2]
    mask &= after[2]
    mask &= (cv2.absdiff(before[0], after[0]) <= FLASH_SAME).astype(np.uint8)
    for shown in recent[-span:-1]:
        mask &= (cv2.absdiff(shown[0], first[0]) <= FLASH_SAME).astype(np.uint8)
    return mask if cv2.countNonZero(mask) >= FLASH_EDGES else None


def _plain_picture(greys: list, f: int, other: int, shown: int, boxes: np.ndarray) -> np.ndarray:
    """Per box: whether frame f, next to text flashed from frame `shown` on, plainly shows the
    picture there: at the pixels the text changed (where `shown` differs from f by >
    GLYPH_STEP) it shows what frame `other`, one further away from the text, shows (mean
    grey-level change <= SETTLE_SAME). Text fading in or out changes those pixels from frame
    to frame, and so does a moving picture: the box stays covered on f (fail closed), as it
    does where a frame is not at hand or where the text changed too few pixels to tell (a box
    of the region check around text that is on f as well: a static line, a clock)."""
    plain = np.zeros(len(boxes), bool)
    if not 0 <= other < len(greys) or not 0 <= f < len(greys) or greys[other] is None:
        return plain
    ints = integer_boxes(boxes, greys[f].shape, pad=0)
    if len(ints) != len(boxes):            # a box off the frame: cannot tell which is which
        return plain
    for k, (x0, y0, x1, y1) in enumerate(ints):
        crop = greys[f][y0:y1, x0:x1]
        changed = cv2.absdiff(greys[shown][y0:y1, x0:x1], crop) > GLYPH_STEP
        plain[k] = changed.sum() >= MIN_CHANGED and \
            float(cv2.absdiff(greys[other][y0:y1, x0:x1], crop)[changed].mean()) <= SETTLE_SAME
    return plain


def _present(cover: np.ndarray, tracked: np.ndarray, greys: list,
             found: list[tuple[int, np.ndarray]], shape: tuple[int, ...],
             confirm=None) -> np.ndarray | None:
    """Per frame of a group and box of its `cover`: whether the box is covered on that frame.

    A box found during the group (not tracked at its start) covered the whole group, so a
    label shown for 5 frames was covered for 18 (round 2's evaluation: the largest share of the
    area redacted where no text is). A box is left uncovered only on a frame where under
    ABSENT of its glyph pixels have their grey level (within GLYPH_STEP) as on a frame where
    it was detected (`found`: frame, boxes detected there), nor on a neighbour that does not
    plainly show the picture without it (`_frames_on`): a clock that ticks keeps most of its
    glyphs and stays covered; a picture behind a label that went has other grey levels where
    the glyphs were. Light text gone from a light picture still matches, and stays covered:
    fail closed. (Edges did not do: a face's edges in a label's box counted 0.41 of the
    label's, and matched a third of them within a pixel.) Tracked boxes, and every box where
    the frames are not at hand, are covered throughout. None: every box on every frame.
    """
    frames = len(greys)
    if not frames or not len(cover) or not found:
        return None
    old = np.round(tracked[:, :4]) if len(tracked) else np.zeros((0, 4), np.float32)
    fresh = ~(np.round(cover[:, :4])[:, None, :] == old[None, :, :]).all(-1).any(1) \
        if len(old) else np.ones(len(cover), bool)
    ints = integer_boxes(cover, shape, pad=0)
    if not fresh.any() or len(ints) != len(cover):
        return None
    present = np.ones((frames, len(cover)), bool)
    for k in np.flatnonzero(fresh):
        x0, y0, x1, y1 = (int(v) for v in ints[k])
        sources = [f for f, boxes in found if len(boxes) and
                   (np.round(boxes[:, :4]) == np.round(cover[k, :4])).all(1).any()]
        if not sources:
            continue
        box = (x0, y0, x1, y1)
        there = _frames_on(greys, box, sources, _glyphs)
        if there.all() and confirm is not None and max(sources) < frames - 1:
            # Found between key frames (its text came and went) and yet on every frame by its
            # smaller grey class: that class can be the picture, which keeps its grey level
            # whether the text is there or not (a light label on a face, the hair and the
            # blue ground beside it: the evaluation's clip_01, covered on all 18 frames of its
            # group). Judged again on the pixels the text changed (where the frame it was
            # found on differs most from another frame of the group), and taken only if the
            # detector finds no text in the box on the nearest frame either side that this
            # says it is off: the detector has the last word, so a picture that moves behind
            # text that stays cannot uncover it.
            found_on = min(sources)
            crops = [g[y0:y1, x0:x1] for g in greys]
            far = int(np.argmax([cv2.absdiff(c, crops[found_on]).mean() for c in crops]))
            changed = cv2.absdiff(crops[far], crops[found_on]) > GLYPH_STEP
            if changed.sum() >= MIN_CHANGED:
                other = _frames_on(greys, box, [found_on], lambda _c, m=changed: m)
                off = np.flatnonzero(~other)
                checks = [int(off[off < found_on].max())] if (off < found_on).any() else []
                checks += [int(off[off > found_on].min())] if (off > found_on).any() else []
                if checks and not any(confirm(f, cover[k, :4]) for f in checks):
                    there = other
        present[:, k] = there
    return present


def _frames_on(greys: list, box: tuple[int, int, int, int], sources: list[int],
               ink) -> np.ndarray:
    """Per frame: whether a new box's text is on it (see `_present`); ink(crop) -> the glyph
    pixels of the box on a frame it was found on."""
    x0, y0, x1, y1 = box
    frames = len(greys)
    shares = np.zeros(frames)
    masks = []
    for found_on in sources:
        reference = greys[found_on][y0:y1, x0:x1]
        glyphs = ink(reference)
        if not glyphs.any():
            return np.ones(frames, bool)
        level = reference[glyphs].astype(np.int16)
        shares = np.maximum(shares, [(np.abs(g[y0:y1, x0:x1][glyphs].astype(np.int16) - level)
                                      <= GLYPH_STEP).mean() for g in greys])
        masks.append(glyphs)
    there = shares >= ABSENT
    # A frame next to the text's frames is covered too (a fade, a frame's worth of timing)
    # unless it plainly shows the picture without the text: its glyph pixels as on a frame
    # well away from the text (`_settled`).
    edge = np.zeros(frames, bool)
    edge[1:] |= there[:-1]
    edge[:-1] |= there[1:]
    edge &= ~there
    away = ~there & ~edge & (shares < ABSENT / 2)
    for f in np.flatnonzero(edge):
        crops = [greys[a][y0:y1, x0:x1] for a in _nearest(away, f, SETTLE_FRAMES)]
        there[f] = shares[f] >= ABSENT / 2 or not _settled(greys[f][y0:y1, x0:x1], crops, masks)
    return there


def _nearest(frames: np.ndarray, f: int, n: int) -> list[int]:
    """The n frames set in `frames` nearest to frame f."""
    candidates = np.flatnonzero(frames)
    return [int(a) for a in candidates[np.argsort(np.abs(candidates - f), kind="stable")][:n]]


def _settled(crop: np.ndarray, others: list[np.ndarray], masks: list[np.ndarray]) -> bool:
    """Whether `crop` shows at every glyph pixel (each of `masks`) what one of `others`
    shows (mean grey-level change <= SETTLE_SAME): the same picture, no text fading in or out.
    A moving picture does not settle, and its box stays covered (fail closed)."""
    for other in others:
        diff = cv2.absdiff(crop, other)
        if all(float(diff[m].mean()) <= SETTLE_SAME for m in masks):
            return True
    return False


def _merge(rects: list[tuple[int, int, int, int]]) -> list[tuple[int, int, int, int]]:
    """Overlapping rectangles as their bounding rectangles: one detection instead of several
    over the same pixels (a clock and a counter on adjacent lines)."""
    rects = list(rects)
    merged = True
    while merged and len(rects) > 1:
        merged = False
        for i in range(len(rects)):
            for j in range(i + 1, len(rects)):
                a, b = rects[i], rects[j]
                if a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]:
                    rects[i] = (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))
                    del rects[j]
                    merged = True
                    break
            if merged:
                break
    return rects


class TextStage:
    """Burned-in text detection and redaction for one file (stateful across its frames)."""

    def __init__(self, mode: str = "redact-all", phi: PhiTerms | None = None, *,
                 key_interval: int = DEFAULT_KEY_INTERVAL, detector=None, recognizer=None,
                 record: bool = False, inplace: bool = False, device: str = "auto") -> None:
        if mode not in MODES:
            raise ValueError(f"burned_in_text must be one of {', '.join(MODES)}, not {mode!r}")
        if key_interval < 1:
            raise ValueError("key_interval must be at least 1")
        self.mode = mode
        self.phi = phi or PhiTerms()
        self.key_interval = key_interval
        self.record = record
        self.inplace = inplace
        self.covered: list[np.ndarray] = []     # per output frame, when record: int boxes
        self.report = TextReport(mode)
        self._area_sum = 0.0
        if mode == "off":
            self._det = self._rec = None
            return
        from dicom_deid.text.ppocr import shared_detector, shared_recognizer

        self._det = detector or shared_detector(device=device)
        self._rec = (recognizer or shared_recognizer(device=device)) \
            if mode == "redact-phi" else None

    @property
    def _detector(self) -> TextDetector:
        """The detector; only the modes other than 'off' detect anything."""
        assert self._det is not None, "the text stage is off"
        return self._det

    # ------------------------------------------------------------------ detection

    def _keep(self, rgb: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """The boxes shrunk to their ink (`ink.tighten`); redact-phi: only those whose text
        identifies, redact-all: all of them."""
        self.report.boxes_found += len(boxes)
        boxes = tighten(rgb, boxes)
        if self._rec is None or not len(boxes):
            return boxes
        texts = self._rec.read(rgb, boxes)
        keep = np.array([self.phi.identifying(t, c) for t, c in texts], bool)
        self.report.boxes_kept += int((~keep).sum())
        return boxes[keep]

    def _detect_full(self, rgb: np.ndarray, still: bool = False) -> np.ndarray:
        self.report.key_frames += 1
        boxes = self._detector.detect(rgb)
        if still:
            # A still is detected once more at 1.5x: light text on a light picture (contrast
            # ~20 grey levels) gave no probability at all at the frame's scale and a clear box
            # at 1.5x (the two tokens Tesseract still read in round 1's evaluation, 12 and 24 px).
            h, w = rgb.shape[:2]
            more = self._detector.detect(rgb, scale=STILL_UPSCALE * self._detector.scale_for(h, w))
            if len(boxes) and len(more):
                # Only what the first pass missed: a line found twice would be read, counted
                # and covered twice.
                ix = (np.minimum(more[:, None, 2], boxes[None, :, 2])
                      - np.maximum(more[:, None, 0], boxes[None, :, 0])).clip(0)
                iy = (np.minimum(more[:, None, 3], boxes[None, :, 3])
                      - np.maximum(more[:, None, 1], boxes[None, :, 1])).clip(0)
                own = ((more[:, 2] - more[:, 0]) * (more[:, 3] - more[:, 1])).clip(1e-6)
                more = more[((ix * iy).max(axis=1) / own) < 0.9]
            boxes = np.concatenate([boxes, more])
        return self._keep(rgb, boxes)

    def _detect_rect(self, rgb: np.ndarray, rect: tuple[int, int, int, int],
                     scale: float) -> tuple[np.ndarray, tuple[int, int, int, int]]:
        """Boxes found in `rect` (grown to the detector's step), and the rectangle detected."""
        x0, y0, x1, y1 = rect
        # The detector's input is a multiple of 32; a crop of another size would be stretched
        # to one, and text read at another scale than the whole frame's.
        step = 32.0 / scale
        h, w = rgb.shape[:2]
        gw, gh = int(np.ceil((x1 - x0) / step) * step), int(np.ceil((y1 - y0) / step) * step)
        x0 = max(0, min(x0 - (gw - (x1 - x0)) // 2, w - gw))
        y0 = max(0, min(y0 - (gh - (y1 - y0)) // 2, h - gh))
        x1, y1 = min(w, x0 + gw), min(h, y0 + gh)
        self.report.region_checks += 1
        boxes = self._detector.detect(np.ascontiguousarray(rgb[y0:y1, x0:x1]), scale=scale)
        if len(boxes):
            boxes[:, [0, 2]] += x0
            boxes[:, [1, 3]] += y0
        return boxes, (x0, y0, x1, y1)

    @staticmethod
    def _edge_rects(tiles: np.ndarray, edges: np.ndarray | None) -> list[tuple[int, int, int, int]]:
        """Frame rectangles to detect for the changed `tiles`: around each cluster of the new
        edges (`edges`, half resolution) inside them, or the whole tiles without edges.

        A tile is 128 frame pixels; the new edges that made it changed are usually a word or a
        chance meeting of a moving picture's edges a few pixels long, so detecting around them
        instead of the tile costs a fraction (the detector's cost grows with the pixels).
        """
        rects = []
        if edges is not None:
            h, w = edges.shape
            mask = np.zeros(edges.shape, np.uint8)
            for ty, tx in np.argwhere(tiles):
                sl = np.s_[ty * TILE:(ty + 1) * TILE, tx * TILE:(tx + 1) * TILE]
                mask[sl] = edges[sl]
            if mask.any():
                linked = cv2.dilate(mask, np.ones((LINK, LINK), np.uint8))
                n, _, stats, _ = cv2.connectedComponentsWithStats(linked, connectivity=8)
                for i in range(1, n):
                    x, y, cw, ch, _ = stats[i]
                    rects.append((x * 2 - MARGIN, y * 2 - MARGIN,
                                  (x + cw) * 2 + MARGIN, (y + ch) * 2 + MARGIN))
                return rects
        n, _, stats, _ = cv2.connectedComponentsWithStats(tiles.astype(np.uint8), connectivity=8)
        for i in range(1, n):
            tx, ty, tw, th, _ = stats[i]
            rects.append((tx * TILE * 2 - MARGIN, ty * TILE * 2 - MARGIN,
                          (tx + tw) * TILE * 2 + MARGIN, (ty + th) * TILE * 2 + MARGIN))
        return rects

    def _detect_regions(self, rgb: np.ndarray, tiles: np.ndarray,
                        boxes: np.ndarray | None = None, edges: np.ndarray | None = None) -> np.ndarray:
        """Detect text around the new edges in connected groups of tiles (`_edge_rects`) and
        around `boxes`, at the scale a whole frame would be detected at."""
        h, w = rgb.shape[:2]
        scale = self._detector.scale_for(h, w)
        rects = self._edge_rects(tiles, edges) if tiles.any() else []
        for x0, y0, x1, y1 in integer_boxes(boxes if boxes is not None else np.zeros((0, 4)),
                                            rgb.shape, pad=0):
            pad = max(8, (y1 - y0) // 2)
            rects.append((x0 - 4 * pad, y0 - pad, x1 + 4 * pad, y1 + pad))
        found = []
        for x0, y0, x1, y1 in _merge(rects):
            rect = (max(0, x0), max(0, y0), min(w, x1), min(h, y1))
            got, rect = self._detect_rect(rgb, rect, scale)
            if not len(got) and max(rect[2] - rect[0], rect[3] - rect[1]) <= FINE_RECT:
                # A lone character (a digit added to a field, a 10 px letter) gives the
                # detector too little context at the frame's scale. benchmarks/text_fine_scale.py
                # (10 px digits, 5 fonts, 4 grounds, 48 px crops): found 70/200 at 4x, 184 at
                # 6x, 200 at 8x; the evaluation's 10 px serif "7" (light with a shadow on blue)
                # only from 6x. Small rectangles only, and closer around the edges (FINE_MARGIN
                # instead of MARGIN): the cost grows with the square of the scale. Such retries
                # are rare (none on text_cost.py's 720p clip, one in the evaluation's clips).
                inner = MARGIN - FINE_MARGIN
                fine = (rect[0] + inner, rect[1] + inner, rect[2] - inner, rect[3] - inner)
                if fine[2] <= fine[0] or fine[3] <= fine[1]:
                    fine = rect
                got, _ = self._detect_rect(rgb, fine, max(FINE_SCALE, 2 * scale))
            # A box that touches a cut edge of the rectangle may go on beyond it (a long line
            # whose far end did not change enough): detect again with room around it.
            if len(got) and self._touches_cut(got, rect, w, h):
                bx0, by0 = got[:, 0].min(), got[:, 1].min()
                bx1, by1 = got[:, 2].max(), got[:, 3].max()
                grow = 4 * TILE
                rect = (int(max(0, min(rect[0], bx0 - grow))), int(max(0, min(rect[1], by0 - grow // 2))),
                        int(min(w, max(rect[2], bx1 + grow))), int(min(h, max(rect[3], by1 + grow // 2))))
                got, _ = self._detect_rect(rgb, rect, scale)
            found.append(got)
        if not found:
            return np.zeros((0, 5), np.float32)
        return self._keep(rgb, np.concatenate(found))

    def _text_in(self, rgb: np.ndarray, box: np.ndarray) -> bool:
        """Whether a region check around `box` finds text over at least a third of it."""
        found = self._detect_regions(rgb, np.zeros((1, 1), bool), box.reshape(1, 4))
        if not len(found):
            return False
        x0, y0, x1, y1 = (float(v) for v in box[:4])
        ix = (np.minimum(found[:, 2], x1) - np.maximum(found[:, 0], x0)).clip(0)
        iy = (np.minimum(found[:, 3], y1) - np.maximum(found[:, 1], y0)).clip(0)
        return bool((ix * iy).sum() >= (x1 - x0) * (y1 - y0) / 3)

    @staticmethod
    def _touches_cut(boxes: np.ndarray, rect: tuple[int, int, int, int], w: int, h: int) -> bool:
        x0, y0, x1, y1 = rect
        near = 3.0
        return bool(((x0 > 0) & (boxes[:, 0] <= x0 + near)).any()
                    or ((y0 > 0) & (boxes[:, 1] <= y0 + near)).any()
                    or ((x1 < w) & (boxes[:, 2] >= x1 - near)).any()
                    or ((y1 < h) & (boxes[:, 3] >= y1 - near)).any())

    # ------------------------------------------------------------------ change check

    @staticmethod
    def _grey(rgb: np.ndarray) -> np.ndarray:
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)

    @staticmethod
    def _edges(grey: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(half-resolution grey image, its edge map)."""
        half = cv2.resize(grey, (max(1, grey.shape[1] // 2), max(1, grey.shape[0] // 2)),
                          interpolation=cv2.INTER_AREA)
        grad = cv2.morphologyEx(half, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
        return half, (grad >= EDGE_LEVEL).astype(np.uint8)

    @staticmethod
    def _still_edges(half: np.ndarray, edges: np.ndarray,
                     before: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        """Edges that are in this frame and the frames `before`, at the same grey level:
        where burned-in text is. A moving picture's edges move, so the grey level at an edge
        pixel changes even where two edges happen to overlap; compared across two frames,
        slow motion (under a pixel a frame) has moved far enough too."""
        still = edges.copy()
        for half_before, edges_before in before:
            still &= edges_before
            still &= (cv2.absdiff(half, half_before) <= STILL_LEVEL).astype(np.uint8)
        return still

    @staticmethod
    def _new_edge_counts(steady: np.ndarray, previous: np.ndarray, known: np.ndarray,
                         keep: list | None = None) -> np.ndarray:
        """Per tile: still edge pixels (`_still_edges`) not within a pixel of a still edge one
        frame earlier, outside the boxes already tracked.

        Text that appears stays where it is, so its edges are still from the frame after it
        appears, and new then; a moving picture's are not, so motion does not make every tile
        look changed (with plain new edges it did, and the stage cost twice the face stage on a
        moving 720p clip).
        """
        new = steady & (1 - cv2.dilate(previous, np.ones((3, 3), np.uint8)))
        for x0, y0, x1, y1 in known:
            new[y0 // 2:(y1 + 1) // 2, x0 // 2:(x1 + 1) // 2] = 0
        if keep is not None:
            keep.append(new)
        return _tile_counts(new)

    # ------------------------------------------------------------------ output

    def _finish(self, rgb: np.ndarray, cover: np.ndarray,
                colours: list[np.ndarray] | None = None) -> np.ndarray:
        """Cover `cover` in `rgb`; colours: the fill of each box (default: from this frame)."""
        boxes = integer_boxes(cover, rgb.shape)
        self.report.frames += 1
        if self.record:
            self.covered.append(boxes)
        if not len(boxes):
            return rgb
        out = rgb if self.inplace else rgb.copy()
        redact(out, boxes, colours)
        area = float(((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).sum())
        share = min(1.0, area / (rgb.shape[0] * rgb.shape[1]))
        self.report.frames_redacted += 1
        self.report.boxes_redacted += len(boxes)
        self.report.area_max = max(self.report.area_max, share)
        self._area_sum += share
        return out

    def process_image(self, rgb: np.ndarray) -> np.ndarray:
        """One still: full detection and cover."""
        if self.mode == "off":
            self.report.frames += 1
            return rgb
        return self._finish(rgb, self._detect_full(rgb, still=True))

    def stream(self, frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """The frames with their text covered, in order, up to `key_interval` frames behind."""
        source = iter(frames)
        with contextlib.closing(source) if hasattr(source, "close") else contextlib.nullcontext():  # type: ignore[type-var]
            if self.mode == "off":
                for rgb in source:
                    self.report.frames += 1
                    yield rgb
                return
            # A single frame is a still (a photograph, a secondary capture): detected as one.
            first = next(source, None)
            if first is None:
                return
            second = next(source, None)
            if second is None:
                yield self.process_image(first)
                return
            yield from self._stream(itertools.chain((first, second), source))

    def _stream(self, source: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        shape = None
        tracked = np.zeros((0, 4), np.float32)     # boxes on screen at the last key frame
        references: list = []                      # their grey pixels and glyph masks when found
        group_edges = None                         # new still edges of the group's frames
        pending: list[np.ndarray] = []             # frames since the last key frame
        pending_greys: list[np.ndarray] = []       # their grey images
        carry: list[np.ndarray] = []               # the last group's cover of its held frames
        raw_recent: deque = deque(maxlen=HOLD)     # plain new edges of the last frames
        previous = before2 = steady_before = None
        known = np.zeros((0, 4), np.int32)         # tracked boxes, padded, as ints
        known_of = None                            # the tracked array they were padded from
        new_maps: dict[int, np.ndarray] = {}       # per frame of the group: its new still edges
        best = peak = None                         # per tile: frame of most new edges, count
        halves: deque = deque(maxlen=FLASH + 2)    # the last frames' (`_flash_mask`)
        flashes: dict[int, list] = {}              # per frame of `pending`: boxes of text on it
                                                   # for under three frames (`_flash_mask`)
        gone_grey = None                           # grey image of the last frame sent out
        margins: list[tuple] = []                  # (frame after a flash, its first frame,
                                                   # boxes): decided on the next frame
        for index, rgb in enumerate(source):
            if shape is None:
                shape = rgb.shape
            elif rgb.shape != shape:
                raise ValueError(f"frame {index + 1} is {rgb.shape}, the first was {shape}")
            grey = self._grey(rgb)
            half, edges = self._edges(grey)
            halves.append((half, edges, 1 - cv2.dilate(edges, np.ones((3, 3), np.uint8)),
                           (cv2.absdiff(half, halves[-1][0]) > FLASH_STEP).astype(np.uint8)
                           if halves else np.zeros_like(edges)))
            if previous is None:
                found = self._detect_full(rgb)
                tracked, references = self._track(found[:, :4], grey)
                yield self._finish(rgb, tracked)
                previous, steady_before = (half, edges), edges
                continue
            # Still over three frames (this one and the two before): two edges of a moving
            # picture meet by chance now and then, three times in a row much more rarely.
            if known_of is not tracked:      # tracked changes at key frames only
                known, known_of = integer_boxes(tracked, shape, pad=4), tracked
            raw_recent.append((edges, previous[1], known))
            steady = self._still_edges(half, edges, [previous] + ([before2] if before2 else []))
            new_map: list = []
            counts = self._new_edge_counts(steady, steady_before, known, new_map)  # type: ignore[arg-type]
            steady_before = steady
            group_edges = new_map[0] if group_edges is None else group_edges | new_map[0]
            if best is None:
                best = np.full(counts.shape, -1, np.int32)
                peak = np.zeros(counts.shape, np.int32)
            # A tile counts as changed with NEW_EDGES new edges, or with GLYPH_EDGES of them
            # packed into one cell of a glyph's size (a single small character added: a 10 px
            # digit has about 19, under NEW_EDGES; a moving picture's chance still edges are
            # spread over the tile).
            more = counts >= NEW_EDGES
            if ((counts >= GLYPH_EDGES) & ~more).any():
                cells = _tile_counts(new_map[0], GLYPH_CELL)
                more |= cells.reshape(counts.shape[0], TILE // GLYPH_CELL, counts.shape[1],
                                      TILE // GLYPH_CELL).max(axis=(1, 3)) >= GLYPH_EDGES
            more &= counts > peak
            if more.any():
                new_maps[len(pending)] = new_map[0]
            best[more] = len(pending)
            peak[more] = counts[more]  # type: ignore[index]
            pending.append(rgb)
            pending_greys.append(grey)
            for after, first, boxes in margins:
                plain = _plain_picture(pending_greys, after, after + 1, first, boxes)
                flashes.setdefault(after, []).append(boxes[~plain])
            margins = []
            for span in range(1, FLASH + 1):
                if len(halves) < span + 2 or len(pending) < span + 1:
                    continue
                mask = _flash_mask(list(halves), span)
                if mask is None:
                    continue
                for x0, y0, x1, y1 in known:
                    mask[y0 // 2:(y1 + 1) // 2, x0 // 2:(x1 + 1) // 2] = 0
                tiles = _tile_counts(mask) >= FLASH_EDGES
                if tiles.any():
                    first = len(pending) - 1 - span
                    found = self._detect_regions(pending[first], tiles, edges=mask)
                    if len(found):
                        boxes = found[:, :4]
                        for f in range(first, first + span):
                            flashes.setdefault(f, []).append(boxes)
                        # The frames either side are covered too (a fade, a frame's worth of
                        # timing) unless they plainly show the picture: the one before as the
                        # frame before it, the one after (this frame) as the next frame, so
                        # that one is decided a frame later (`margins`).
                        if first >= 1:
                            # the frame before the neighbour may have gone out with the group
                            plain = _plain_picture([gone_grey, *pending_greys], first, first - 1,
                                                   first + 1, boxes)
                            flashes.setdefault(first - 1, []).append(boxes[~plain])
                        margins.append((first + span, first, boxes))
            before2, previous = previous, (half, edges)
            if len(pending) == self.key_interval + HOLD:
                tracked, references, carry = yield from self._flush(
                    pending, grey, tracked, references, best, carry, hold=HOLD,
                    key_edges=edges, new_maps=new_maps, group_edges=group_edges,
                    frame_greys=pending_greys, flashes=flashes)
                shift = len(pending) - HOLD
                flashes = {f - shift: b for f, b in flashes.items() if f >= shift}
                margins = [(a - shift, f - shift, b) for a, f, b in margins]
                new_maps, group_edges = {}, None
                # The last frames of a group are held and go out with the next group, covered
                # by what both groups found: text that appears on them has no still edges
                # until two frames later.
                pending, best, peak = pending[-HOLD:], None, None
                gone_grey = pending_greys[-HOLD - 1]
                pending_greys = pending_greys[-HOLD:]
        for after, _first, boxes in margins:      # no frame after it: covered (fail closed)
            flashes.setdefault(after, []).append(boxes)
        if pending:
            last_grey = self._grey(pending[-1])
            # Text that appears on the last two frames has no still edges yet: there, tiles
            # with any new edges are detected on the last frame.
            recent = None
            for edges_now, edges_before, known in raw_recent:
                maps: list = []
                changed = self._new_edge_counts(edges_now, edges_before, known, maps) >= NEW_EDGES
                recent = changed if recent is None else recent | changed
                group_edges = maps[0] if group_edges is None else group_edges | maps[0]
            yield from self._flush(pending, last_grey, tracked, references, best, carry,
                                   recent=recent, key_edges=previous[1], new_maps=new_maps,  # type: ignore[index]
                                   group_edges=group_edges, frame_greys=pending_greys,
                                   flashes=flashes)

    def _track(self, boxes: np.ndarray, grey: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """Boxes to follow from this frame on, with their grey pixels now."""
        ints = integer_boxes(_union(boxes), grey.shape, pad=0)
        refs = []
        for x0, y0, x1, y1 in ints:
            crop = grey[y0:y1, x0:x1].copy()
            refs.append((crop, _glyphs(crop)))
        return ints.astype(np.float32), refs  # type: ignore[return-value]

    def _flush(self, pending: list[np.ndarray], grey: np.ndarray, tracked: np.ndarray,
               references: list[np.ndarray], best: np.ndarray | None, carry: list[np.ndarray],
               hold: int = 0, recent: np.ndarray | None = None,
               key_edges: np.ndarray | None = None, new_maps: dict | None = None,
               group_edges: np.ndarray | None = None, frame_greys: list | None = None,
               flashes: dict | None = None):
        """Key frame (the last of `pending`, `grey` its grey image): settle what was on screen
        during the group, cover every frame of it, and return the boxes tracked from here on
        with their reference pixels."""
        self.report.key_frames += 1
        last = len(pending) - 1
        ints = integer_boxes(tracked, grey.shape, pad=0)
        changed = np.array([_text_changed(grey[y0:y1, x0:x1], ref)  # type: ignore[arg-type, type-var]
                            for (x0, y0, x1, y1), ref in zip(ints, references, strict=True)],
                           bool).reshape(-1)
        dirty = best >= 0 if best is not None else np.zeros((1, 1), bool)
        on_key = np.zeros((0, 5), np.float32)
        at_key = dirty
        if recent is not None:
            at_key = recent | dirty if dirty.shape == recent.shape else recent
        if at_key.any() or changed.any():
            on_key = self._detect_regions(pending[last], at_key, tracked[changed], edges=group_edges)
        # A tile whose new edges are still there on the key frame was detected there; one whose
        # new edges went (text that came and went) is detected where they were.
        gone = dirty.copy()
        if dirty.any() and key_edges is not None and new_maps:
            for ty, tx in np.argwhere(dirty):
                new = new_maps.get(int(best[ty, tx]))  # type: ignore[index]
                if new is None:
                    continue
                sl = np.s_[ty * TILE:(ty + 1) * TILE, tx * TILE:(tx + 1) * TILE]
                edges_there = int(new[sl].sum())
                kept_there = int((new[sl] & key_edges[sl]).sum())
                gone[ty, tx] = kept_there < 0.5 * edges_there
        between = [self._detect_regions(pending[f], gone & (best == f), edges=new_maps.get(int(f)))  # type: ignore[union-attr]
                   for f in np.unique(best[gone]) if f != last] if gone.any() else []  # type: ignore[index]
        cover = _union(tracked, on_key, *between)
        # One fill colour per box for the group, from its first frame: the fill of a static
        # overlay does not change, and the colours cost more than the fills.
        colours = _colours(pending[0], cover)
        between_on = [int(f) for f in np.unique(best[gone]) if f != last] if gone.any() else []  # type: ignore[index]
        present = _present(cover, tracked, frame_greys if frame_greys and
                           len(frame_greys) == len(pending) else [],
                           [(last, on_key), *zip(between_on, between, strict=True)], grey.shape,
                           confirm=lambda f, box: self._text_in(pending[f], box))
        for i, frame in enumerate(pending[:len(pending) - hold]):
            if i < len(carry):
                # held over from the last group: what either group covers on it
                mine = cover if present is None else cover[present[i]]
                boxes, fills = _union(mine, carry[i]), None
            elif present is None or present[i].all():
                boxes, fills = cover, colours
            else:
                keep = np.flatnonzero(present[i])
                boxes, fills = cover[keep], [colours[k] for k in keep]
            if flashes and i in flashes:
                # Text on screen for a frame or two: covered there (and a frame either side),
                # in the colours of this frame's surroundings.
                extra = _union(*flashes[i])
                boxes, fills = np.concatenate([boxes[:, :4], extra]), None
            yield self._finish(frame, boxes, fills)
        # Tracked from here on: the boxes whose pixels did not change (compared with when they
        # were found, so that a slow change adds up), and what the key frame shows. Boxes found
        # only on an earlier frame of the group came and went, and were covered above.
        kept = tracked[~changed]
        kept_refs = [r for r, c in zip(references, changed, strict=True) if not c]
        new, new_refs = self._track(on_key[:, :4], grey)
        if len(kept) and len(new):
            fresh = ~(np.round(new)[:, None, :] == np.round(kept)[None, :, :]).all(-1).any(1)
            new, new_refs = new[fresh], [r for r, f in zip(new_refs, fresh, strict=True) if f]
        held = [cover if present is None else cover[present[i]]
                for i in range(len(pending) - hold, len(pending))]
        return np.concatenate([kept.reshape(-1, 4), new.reshape(-1, 4)]), kept_refs + new_refs, held

    def close(self) -> TextReport:
        if self.report.frames:
            self.report.area_mean = self._area_sum / self.report.frames
        return self.report
