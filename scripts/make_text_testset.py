#!/usr/bin/env python3
"""Build a burned-in text test set from ../shared/data: stills and short videos with overlays
like those that endoscopy towers, ultrasound machines and exam cameras burn in (names, IDs,
dates, times, institution), with ground truth per token.

    python scripts/make_text_testset.py --data ../shared/data --output /tmp/textset

writes DIR/<name>.png and DIR/<name>.mp4, and DIR/truth.json:

    {"items": [{"file", "kind": image|video, "width", "height", "frames", "fps",
                "tokens": [{"text", "field", "phi", "size_px", "font", "style",
                            "box": [x0, y0, x1, y1], "frames": [[first, last_plus_one], ...]}]}]}

A token is one word as drawn (its ink box, in pixels); a changing field (a running clock, a
frame counter) gives one token per value shown, each with the frames it is on screen. Sizes are
font em sizes in pixels (10-40), fonts are DejaVu (Sans, Mono, Serif, Condensed) and OpenCV's
Hershey fonts, styles are light or dark text on a box or straight on the picture, with or
without a shadow. All identities are invented. The evaluation (benchmarks/text_eval.py) builds
the same items in memory through `build_items`, so it also has the frames without overlay.

Never commit what this writes: the pictures come from ../shared/data (see its MANIFEST.md for
attribution).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
PIL_FONTS = ("DejaVuSans.ttf", "DejaVuSansMono.ttf", "DejaVuSerif.ttf",
             "DejaVuSansCondensed-Bold.ttf", "DejaVuSansMono-Bold.ttf")
HERSHEY = {"hershey-simplex": cv2.FONT_HERSHEY_SIMPLEX, "hershey-plain": cv2.FONT_HERSHEY_PLAIN,
           "hershey-duplex": cv2.FONT_HERSHEY_DUPLEX}
SIZES = (10, 12, 14, 16, 20, 24, 32, 40)
STYLES = ("box-dark", "box-light", "plain-light", "plain-dark", "plain-light-shadow")

FIRST = ("JANE", "JOHN", "MARIA", "AHMED", "WEI", "OLGA", "PIERRE", "FATIMA", "KENJI", "LUCIA")
LAST = ("DOE", "MUELLER", "OKAFOR", "NAKAMURA", "GARCIA", "KOWALSKI", "DUBOIS", "LINDQVIST",
        "HOLLOWAY", "PETROV")
INSTITUTIONS = ("ST MARY HOSPITAL", "NORTHGATE CLINIC", "KLINIKUM WESTEND", "RIVERSIDE MEDICAL",
                "HOPITAL SAINT LOUIS")


@dataclass
class Line:
    """One line of burned-in text: fixed words, or a changing field."""

    field: str                 # name, id, dob, date, time, institution, accession, clock, counter, label
    words: list[str]
    phi: bool
    changing: str = ""         # "" | "clock" | "counter"
    start: int = 0             # first frame on screen
    stop: int | None = None    # first frame no longer on screen (None: to the end)


@dataclass
class Block:
    """Lines drawn together in one corner with one font, size and style."""

    lines: list[Line]
    font: str
    size: int
    style: str
    anchor: tuple[float, float]      # where the block sits, as fractions of the frame
    layout: list[tuple[int, int]] = field(default_factory=list)   # per line: x, baseline y


@dataclass
class Item:
    name: str
    kind: str                         # image | video
    source: Path
    start_frame: int
    frames: int
    fps: float
    size: tuple[int, int] | None      # (width, height) to resize to, None: native
    blocks: list[Block]

    def backgrounds(self) -> Iterator[np.ndarray]:
        """The source frames (RGB), without any overlay."""
        if self.kind == "image":
            bgr = cv2.imread(str(self.source), cv2.IMREAD_COLOR)
            if bgr is None:
                raise SystemExit(f"{self.source}: cannot read the image")
            yield self._resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            return
        cap = cv2.VideoCapture(str(self.source))
        try:
            n = 0
            while n < self.start_frame + self.frames:
                ok, bgr = cap.read()
                if not ok:
                    break
                if n >= self.start_frame:
                    yield self._resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
                n += 1
        finally:
            cap.release()

    def _resize(self, rgb: np.ndarray) -> np.ndarray:
        if self.size is None or (rgb.shape[1], rgb.shape[0]) == self.size:
            return np.ascontiguousarray(rgb)
        return cv2.resize(rgb, self.size, interpolation=cv2.INTER_AREA)

    def frames_with_truth(self) -> Iterator[tuple[np.ndarray, np.ndarray, list[dict]]]:
        """(background, frame with overlay, tokens on screen) per frame."""
        for index, background in enumerate(self.backgrounds()):
            frame, tokens = render(background, self.blocks, index, self.fps)
            yield background, frame, tokens


# ---------------------------------------------------------------------- drawing

def _pil_font(name: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(FONT_DIR / name), size)


def _hershey_scale(font: int, size: int) -> float:
    # Scale so that a capital's height is about 0.73 em, as in DejaVu.
    (_, h), _ = cv2.getTextSize("H", font, 1.0, 1)
    return 0.73 * size / h


def _word_boxes(text_words: list[str], font_name: str, size: int, x: int, baseline: int) -> list[tuple[str, list[int]]]:
    """Each word's ink box when the line starts at (x, baseline)."""
    out = []
    if font_name in HERSHEY:
        font = HERSHEY[font_name]
        scale = _hershey_scale(font, size)
        thick = max(1, round(size / 14))
        space = cv2.getTextSize(" ", font, scale, thick)[0][0]
        for word in text_words:
            (w, h), base = cv2.getTextSize(word, font, scale, thick)
            out.append((word, [x, baseline - h - thick, x + w, baseline + base // 2 + thick]))
            x += w + space
        return out
    font = _pil_font(font_name, size)
    for word in text_words:
        x0, y0, x1, y1 = font.getbbox(word, anchor="ls")
        out.append((word, [x + x0, baseline + y0, x + x1, baseline + y1]))
        x += round(font.getlength(word + " "))
    return out


def _line_width(words: list[str], font_name: str, size: int) -> int:
    boxes = _word_boxes(words, font_name, size, 0, 0)
    return boxes[-1][1][2] if boxes else 0


def _colours(style: str) -> tuple[tuple[int, int, int], tuple[int, int, int] | None, bool]:
    """(text colour, box colour or None, shadow)."""
    return {
        "box-dark": ((235, 235, 235), (20, 20, 24), False),
        "box-light": ((15, 15, 15), (225, 225, 215), False),
        "plain-light": ((250, 250, 250), None, False),
        "plain-dark": ((5, 5, 5), None, False),
        "plain-light-shadow": ((255, 255, 120), None, True),
    }[style]


def line_words(line: Line, frame: int, fps: float) -> list[str]:
    if line.changing == "clock":
        base = int(line.words[0])              # seconds since midnight at frame 0
        t = base + int(frame / fps)
        return [f"{t // 3600 % 24:02d}:{t // 60 % 60:02d}:{t % 60:02d}"]
    if line.changing == "counter":
        return [line.words[0], f"{int(line.words[1]) + frame:05d}"]
    return line.words


def layout(block: Block, width: int, height: int, fps: float, frames: int) -> tuple[int, int, int, int]:
    """Place the block's lines inside the frame at its anchor (widest state of each line);
    returns the rectangle it takes."""
    step = round(block.size * 1.35)
    widest = 0
    for line in block.lines:
        states = {tuple(line_words(line, f, fps)) for f in (0, max(0, frames - 1))}
        widest = max(widest, *(_line_width(list(s), block.font, block.size) for s in states))
    total_h = step * len(block.lines)
    margin = max(4, block.size // 2)
    fx, fy = block.anchor
    x = int(margin + fx * max(0, width - widest - 2 * margin))
    y = int(margin + fy * max(0, height - total_h - 2 * margin))
    block.layout = [(x, y + round(step * (i + 0.78))) for i in range(len(block.lines))]
    return x - margin // 2, y - margin // 2, x + widest + margin // 2, y + total_h + margin // 2


def _overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def place(blocks: list[Block], width: int, height: int, fps: float, frames: int) -> None:
    """Lay the blocks out without overlapping each other (a device does not print one field
    over another): a block that would overlap moves along its side, then gets smaller."""
    taken: list[tuple[int, int, int, int]] = []
    for block in blocks:
        fx, fy = block.anchor
        while True:
            tries = [(fx, fy)] + [(fx, y) for y in (0.0, 0.35, 0.7, 1.0) if y != fy] \
                + [(x, fy) for x in (0.0, 0.5, 1.0) if x != fx]
            for anchor in tries:
                block.anchor = anchor
                rect = layout(block, width, height, fps, frames)
                if rect[2] <= width and rect[3] <= height and not any(_overlaps(rect, t) for t in taken):
                    taken.append(rect)
                    break
            else:
                smaller = [s for s in SIZES if s < block.size]
                if smaller:
                    block.size = smaller[-1]
                    block.anchor = (fx, fy)
                    continue
                taken.append(rect)         # the smallest size still overlaps: keep it
            break


def render(background: np.ndarray, blocks: list[Block], frame: int, fps: float) -> tuple[np.ndarray, list[dict]]:
    """The frame with every block drawn, and the tokens on screen (ink boxes)."""
    image = Image.fromarray(background)
    draw = ImageDraw.Draw(image)
    tokens: list[dict] = []
    hershey_jobs = []
    for block in blocks:
        colour, box_colour, shadow = _colours(block.style)
        for line, (x, baseline) in zip(block.lines, block.layout, strict=True):
            if frame < line.start or (line.stop is not None and frame >= line.stop):
                continue
            words = line_words(line, frame, fps)
            boxes = _word_boxes(words, block.font, block.size, x, baseline)
            if box_colour is not None:
                pad = max(2, block.size // 6)
                x0 = min(b[0] for _, b in boxes) - pad
                y0 = baseline - round(block.size * 0.95) - pad // 2
                x1 = max(b[2] for _, b in boxes) + pad
                y1 = baseline + round(block.size * 0.3) + pad // 2
                draw.rectangle([x0, y0, x1, y1], fill=box_colour)
            if block.font in HERSHEY:
                hershey_jobs.append((" ".join(words), x, baseline, block, colour, shadow))
            else:
                font = _pil_font(block.font, block.size)
                text = " ".join(words)
                if shadow:
                    draw.text((x + 1, baseline + 1), text, font=font, fill=(0, 0, 0), anchor="ls")
                draw.text((x, baseline), text, font=font, fill=colour, anchor="ls")
            for word, box in boxes:
                tokens.append({"text": word, "field": line.field, "phi": line.phi,
                               "size_px": block.size, "font": block.font, "style": block.style,
                               "changing": line.changing, "box": box})
    out = np.array(image)
    for text, x, baseline, block, colour, shadow in hershey_jobs:
        font = HERSHEY[block.font]
        scale = _hershey_scale(font, block.size)
        thick = max(1, round(block.size / 14))
        if shadow:
            cv2.putText(out, text, (x + 1, baseline + 1), font, scale, (0, 0, 0), thick, cv2.LINE_AA)
        cv2.putText(out, text, (x, baseline), font, scale, colour, thick, cv2.LINE_AA)
    h, w = out.shape[:2]
    for token in tokens:
        x0, y0, x1, y1 = token["box"]
        token["box"] = [max(0, x0), max(0, y0), min(w, x1), min(h, y1)]
    return out, tokens


# ---------------------------------------------------------------------- the set

def _identity(rng: random.Random) -> dict[str, list[str]]:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    y, m, d = rng.randint(1930, 2015), rng.randint(1, 12), rng.randint(1, 28)
    ey, em, ed = rng.randint(2018, 2026), rng.randint(1, 12), rng.randint(1, 28)
    date_styles = (f"{ey}-{em:02d}-{ed:02d}", f"{ed:02d}/{em:02d}/{ey}", f"{ed:02d}.{em:02d}.{ey}",
                   f"{ey}{em:02d}{ed:02d}")
    return {
        "name": rng.choice(([f"{last}^{first}"], [first.title(), last.title()], [f"{last},", first])),
        "id": [rng.choice(("ID", "MRN", "PID")), str(rng.randint(10_000_000, 99_999_999))],
        "dob": ["DOB", f"{y}-{m:02d}-{d:02d}" if rng.random() < 0.5 else f"{d:02d}/{m:02d}/{y}"],
        "date": [rng.choice(date_styles)],
        "time": [f"{rng.randint(7, 19):02d}:{rng.randint(0, 59):02d}"],
        "institution": rng.choice(INSTITUTIONS).split(),
        "accession": ["ACC", f"A{rng.randint(100000, 999999)}"],
    }


def _blocks(rng: random.Random, kind: str, frames: int, sizes: list[int]) -> list[Block]:
    ident = _identity(rng)
    fonts = list(PIL_FONTS) + list(HERSHEY)

    def pick_font() -> str:
        return rng.choice(fonts)

    blocks = [
        Block([Line("name", ident["name"], True), Line("id", ident["id"], True),
               Line("dob", ident["dob"], True)], pick_font(), sizes[0], rng.choice(STYLES), (0.0, 0.0)),
        Block([Line("institution", ident["institution"], True), Line("date", ident["date"], True),
               Line("time", ident["time"], True)], pick_font(), sizes[1], rng.choice(STYLES), (1.0, 0.0)),
        Block([Line("accession", ident["accession"], True)], pick_font(), sizes[2], rng.choice(STYLES), (1.0, 1.0)),
    ]
    if kind == "video":
        clock = str(rng.randint(8 * 3600, 18 * 3600))
        blocks.append(Block([Line("clock", [clock], True, changing="clock"),
                             Line("counter", ["FRM", str(rng.randint(0, 500))], False, changing="counter")],
                            pick_font(), sizes[3], rng.choice(STYLES), (0.0, 1.0)))
        # A label that appears and goes between two key frames of the text stage: it must be
        # covered in every frame it is on screen.
        start = rng.randint(3, max(4, frames // 2))
        blocks.append(Block([Line("label", ["DR", rng.choice(LAST)], True, start=start,
                                  stop=start + rng.randint(5, 11))],
                            pick_font(), sizes[4], rng.choice(STYLES), (0.5, 0.55)))
    return blocks


def _short_blocks(rng: random.Random, frames: int, key_interval: int = 16) -> list[Block]:
    """Text a key-frame sampler misses: a name shown for one frame and one shown for two,
    between two key frames of the text stage (every `key_interval` frames from 0), and a
    single character that appears mid-clip and stays (a digit added to a field)."""
    font, style = rng.choice(PIL_FONTS), rng.choice(STYLES)
    one = rng.randint(3, min(key_interval - 3, frames - 2))
    two = one + rng.randint(3, 6)
    char = rng.randint(frames // 3, max(frames // 3, frames - 8))
    return [
        Block([Line("flash", ["DR", rng.choice(LAST)], True, start=one, stop=one + 1)],
              font, rng.choice((12, 14, 16, 20)), style, (0.5, 0.3)),
        Block([Line("flash", [rng.choice(FIRST), rng.choice(LAST)], True, start=two, stop=two + 2)],
              font, rng.choice((12, 14, 16, 20)), style, (0.5, 0.75)),
        Block([Line("char", [str(rng.randint(0, 9))], True, start=char)],
              font, rng.choice((10, 12, 14)), style, (0.75, 0.4)),
    ]


def build_items(data: Path, seed: int = 0, stills: int = 16, clips: int = 4, frames: int = 50,
                height: int | None = None, short_text: bool = False) -> list[Item]:
    """The test items, deterministic for a seed. height: resize every item to this height
    (16:9 for videos), None keeps the sources' sizes. short_text: the clips also get
    `_short_blocks` (drawn from a generator of their own, so the rest of the set is the same
    with and without)."""
    rng = random.Random(seed)
    photos = sorted((data / "faces" / "london").rglob("*.jpg"))
    videos = sorted((data / "video").rglob("*.mp*"))
    if not photos or not videos:
        raise SystemExit(f"{data}: faces/london/*.jpg and video/*.mpg|mp4 are needed")
    size_cycle = list(SIZES)
    items: list[Item] = []

    def sizes_for(n: int) -> list[int]:
        out = []
        for _ in range(n):
            if not size_cycle:
                size_cycle.extend(SIZES)
                rng.shuffle(size_cycle)
            out.append(size_cycle.pop())
        return out

    for i in range(stills):
        src = photos[rng.randrange(len(photos))]
        size = (height, height) if height else None
        items.append(Item(f"still_{i:02d}", "image", src, 0, 1, 25.0, size,
                          _blocks(rng, "image", 1, sizes_for(3))))
    for i in range(clips):
        src = videos[i % len(videos)]
        cap = cv2.VideoCapture(str(src))
        fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or frames)
        cap.release()
        start = rng.randint(0, max(0, total - frames - 1))
        size = (height * 16 // 9, height) if height else None
        blocks = _blocks(rng, "video", frames, sizes_for(5))
        if short_text:
            blocks += _short_blocks(random.Random(f"{seed}-short-{i}"), frames)
        items.append(Item(f"clip_{i:02d}", "video", src, start, frames, float(fps), size, blocks))
    for item in items:
        first = next(item.backgrounds())
        place(item.blocks, first.shape[1], first.shape[0], item.fps, item.frames)
    return items


def write_item(item: Item, out_dir: Path) -> dict:
    tokens: dict[tuple, dict] = {}
    n = 0
    writer = None
    path = out_dir / f"{item.name}.{'png' if item.kind == 'image' else 'mp4'}"
    try:
        for _, frame, on_screen in item.frames_with_truth():
            if item.kind == "image":
                cv2.imwrite(str(path), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
            else:
                if writer is None:
                    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), item.fps,
                                             (frame.shape[1], frame.shape[0]))
                writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
            for t in on_screen:
                k = (t["text"], tuple(t["box"]), t["field"])
                entry = tokens.setdefault(k, {**t, "frames": []})
                ranges = entry["frames"]
                if ranges and ranges[-1][1] == n:
                    ranges[-1][1] = n + 1
                else:
                    ranges.append([n, n + 1])
            n += 1
            height, width = frame.shape[:2]
    finally:
        if writer is not None:
            writer.release()
    return {"file": path.name, "kind": item.kind, "width": width, "height": height,
            "frames": n, "fps": item.fps, "tokens": list(tokens.values())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stills", type=int, default=16)
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--frames", type=int, default=50, help="frames per clip")
    parser.add_argument("--height", type=int, default=None,
                        help="resize everything to this height (videos 16:9), e.g. 720")
    parser.add_argument("--short-text", action="store_true",
                        help="clips also show a name for 1 frame, one for 2, and a lone new character")
    args = parser.parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    items = build_items(args.data, args.seed, args.stills, args.clips, args.frames, args.height,
                        short_text=args.short_text)
    truth = {"seed": args.seed, "items": [write_item(item, args.output) for item in items]}
    (args.output / "truth.json").write_text(json.dumps(truth, indent=1))
    tokens = sum(len(i["tokens"]) for i in truth["items"])
    print(f"{args.output}: {len(items)} items, {tokens} tokens", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
