"""Open-set benchmark folders built from real images that Debian packages install.

Each task is a folder ``TASK/train/<class>/*.png`` and ``TASK/test/<class>/*.png`` whose test classes never
appear in training (the CUB / Cars / SOP protocol):

- ``glyphs``: classes are the 62 characters 0-9, A-Z, a-z; instances are the same character in every installed
  font that draws it (fonts-* packages). 36 characters train, 26 are held out.
- ``icons``: classes are freedesktop icon names (``folder``, ``printer``, ``edit-copy``, ...); instances are the
  same icon in every installed icon theme (*-icon-theme packages), rasterised with rsvg-convert where a theme
  ships SVG only. Half the names are held out.
- ``photos``: classes are desktop-background photographs (gnome-backgrounds, mate-backgrounds,
  plasma-workspace-wallpapers, ukui-wallpapers, ...); instances are random patches of one photograph at several
  scales. Half the photographs are held out.

    python -m bench.quality.tasks --out ~/.cache/ee-quality [--install]

``--install`` runs apt-get for the packages in ``PACKAGES`` first (root only). Building is deterministic for a
given set of installed files: names and files are sorted and every random choice is seeded.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import shutil
import string
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

SIZE = 64

PACKAGES = {
    "glyphs": [
        "fonts-dejavu-core", "fonts-dejavu-extra", "fonts-liberation2", "fonts-freefont-ttf", "fonts-urw-base35",
        "fonts-noto-core", "fonts-crosextra-carlito", "fonts-crosextra-caladea", "fonts-linuxlibertine",
        "fonts-cantarell", "fonts-roboto-unhinted", "fonts-open-sans", "fonts-lato", "fonts-hack", "fonts-texgyre",
        "fonts-sil-gentium", "fonts-sil-charis", "fonts-sil-andika", "fonts-comic-neue", "fonts-cabin", "fonts-jura",
        "fonts-inconsolata", "fonts-firacode", "fonts-adf-accanthis", "fonts-adf-gillius", "fonts-adf-universalis",
        "fonts-adf-berenis", "fonts-adf-baskervald", "fonts-adf-ikarius", "fonts-adf-irianis", "fonts-adf-libris",
        "fonts-adf-mekanus", "fonts-adf-oldania", "fonts-adf-romande", "fonts-adf-switzera", "fonts-adf-tribun",
        "fonts-adf-verana", "fonts-go", "fonts-league-spartan", "fonts-mononoki",
    ],
    "icons": [
        "gnome-icon-theme", "oxygen-icon-theme", "adwaita-icon-theme", "breeze-icon-theme", "papirus-icon-theme",
        "elementary-xfce-icon-theme", "faenza-icon-theme", "moka-icon-theme", "numix-icon-theme", "mate-icon-theme",
        "lxde-icon-theme", "gnome-icon-theme-gartoon", "gnome-icon-theme-nuovo", "gnome-icon-theme-yasis",
        "tango-icon-theme", "deepin-icon-theme", "paper-icon-theme", "obsidian-icon-theme", "faba-icon-theme",
        "librsvg2-bin",
    ],
    "photos": ["gnome-backgrounds", "mate-backgrounds", "plasma-workspace-wallpapers", "ukui-wallpapers",
               "lomiri-wallpapers", "sway-backgrounds"],
}

TASKS = tuple(PACKAGES)


def install(tasks: tuple[str, ...]) -> None:
    pkgs = sorted({p for t in tasks for p in PACKAGES[t]})
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *pkgs], check=True, env=env)


def _digest(im: Image.Image) -> str:
    return hashlib.sha1(im.tobytes()).hexdigest()


def _split_classes(names: list[str], n_test: int, seed: int) -> set[str]:
    rng = np.random.default_rng(seed)
    order = sorted(names)
    return set(np.asarray(order)[rng.permutation(len(order))[:n_test]].tolist())


def _write(out: Path, test_classes: set[str], items: dict[str, list[Image.Image]]) -> dict[str, int]:
    counts = {"train": 0, "test": 0}
    for cls in sorted(items):
        part = "test" if cls in test_classes else "train"
        d = out / part / cls
        d.mkdir(parents=True, exist_ok=True)
        for i, im in enumerate(items[cls]):
            im.save(d / f"{i:03d}.png")
        counts[part] += len(items[cls])
    return counts


# ----------------------------------------------------------------------------------------------------- glyphs
GLYPHS = string.digits + string.ascii_uppercase + string.ascii_lowercase


def _glyph_class(ch: str) -> str:
    # one name per character that survives case-insensitive file systems
    return f"digit_{ch}" if ch.isdigit() else (f"upper_{ch}" if ch.isupper() else f"lower_{ch}")


def _font_files() -> list[Path]:
    roots = [Path("/usr/share/fonts")]
    files = sorted({p for r in roots if r.is_dir() for p in r.rglob("*") if p.suffix.lower() in (".ttf", ".otf")})
    return files


def _render(font: ImageFont.FreeTypeFont, ch: str) -> Image.Image | None:
    box = font.getbbox(ch)
    w, h = box[2] - box[0], box[3] - box[1]
    if w <= 1 or h <= 1:
        return None
    canvas = Image.new("L", (w + 8, h + 8), 255)
    ImageDraw.Draw(canvas).text((4 - box[0], 4 - box[1]), ch, font=font, fill=0)
    side = max(canvas.size)
    square = Image.new("L", (side, side), 255)
    square.paste(canvas, ((side - canvas.size[0]) // 2, (side - canvas.size[1]) // 2))
    return square.resize((SIZE, SIZE), Image.LANCZOS)


def build_glyphs(out: Path, seed: int = 0, max_fonts: int = 64) -> dict[str, int]:
    """Fonts that draw all 62 characters (none as the .notdef box), each design once; a seeded choice of at
    most `max_fonts` of them (fonts-noto-core alone has some 300 Latin weights and widths)."""
    items: dict[str, list[Image.Image]] = defaultdict(list)
    seen_fonts: set[str] = set()
    fonts: list[dict[str, Image.Image]] = []
    for path in _font_files():
        try:
            font = ImageFont.truetype(str(path), 48)
        except OSError:
            continue
        notdef = _render(font, "\uffff")
        glyphs = {ch: _render(font, ch) for ch in GLYPHS}
        if any(g is None for g in glyphs.values()):
            continue
        digests = {ch: _digest(g) for ch, g in glyphs.items()}
        if notdef is not None and _digest(notdef) in digests.values():
            continue  # the font lacks some of the characters and draws its missing-glyph box instead
        if len(set(digests.values())) < len(GLYPHS) - 2:
            continue  # several characters drawn the same: a symbol or small-caps font
        key = hashlib.sha1("".join(digests[c] for c in GLYPHS).encode()).hexdigest()
        if key in seen_fonts:  # the same design installed twice (e.g. .ttf and .otf)
            continue
        seen_fonts.add(key)
        fonts.append(glyphs)
    rng = np.random.default_rng(seed)
    if len(fonts) > max_fonts:
        fonts = [fonts[i] for i in sorted(rng.permutation(len(fonts))[:max_fonts])]
    for glyphs in fonts:
        for ch, g in glyphs.items():
            items[_glyph_class(ch)].append(g.convert("RGB"))
    if not items:
        raise SystemExit("no usable fonts: install the packages of PACKAGES['glyphs'] (or pass --install)")
    test = _split_classes(list(items), 26, seed)
    return _write(out, test, items)


# ------------------------------------------------------------------------------------------------------ icons
_ICON_CONTEXTS = ("apps", "places", "devices", "mimetypes", "actions", "status", "categories", "emblems")


def _theme_icons(theme: Path) -> dict[str, Path]:
    """icon name -> the best file of that theme (the largest bitmap, or an SVG from the largest scalable size)."""
    best: dict[str, tuple[int, Path]] = {}
    for p in theme.rglob("*"):
        if p.suffix.lower() not in (".png", ".svg") or not p.is_file():
            continue
        parts = [s.lower() for s in p.relative_to(theme).parts]
        if not any(c in parts for c in _ICON_CONTEXTS) or "symbolic" in p.stem or any("symbolic" in s for s in parts):
            continue
        size = 0
        for s in parts[:-1]:
            digits = s.split("x")[0].split("@")[0]
            if digits.isdigit():
                size = int(digits)
        score = 10_000 if p.suffix.lower() == ".svg" and (size == 0 or size >= 48) else size
        if score < 32:
            continue  # 16 / 22 / 24 px bitmaps are too coarse to be an instance
        name = p.stem
        if name not in best or score > best[name][0]:
            best[name] = (score, p)
    return {n: p for n, (s, p) in best.items()}


def _load_icon(path: Path) -> Image.Image | None:
    try:
        if path.suffix.lower() == ".svg":
            data = subprocess.run(["rsvg-convert", "-w", str(SIZE), "-h", str(SIZE), "-a", str(path)],
                                  capture_output=True, check=True, timeout=20).stdout
            im = Image.open(io.BytesIO(data))
        else:
            im = Image.open(path)
        im = im.convert("RGBA")
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    im.thumbnail((SIZE, SIZE), Image.LANCZOS)
    canvas = Image.new("RGBA", (SIZE, SIZE), (255, 255, 255, 255))
    canvas.alpha_composite(im, ((SIZE - im.size[0]) // 2, (SIZE - im.size[1]) // 2))
    out = canvas.convert("RGB")
    if np.asarray(out).std() < 3:
        return None  # blank
    return out


def _theme_families() -> dict[str, Path]:
    """One theme per family: Obsidian-Aqua-Light, Papirus-Dark, ePapirus, ... are colour variants of one design,
    which would make near-copies of one instance; the family's base theme (the shortest name) stands for it."""
    themes = sorted(p for p in Path("/usr/share/icons").iterdir() if p.is_dir() and (p / "index.theme").is_file()
                    and p.name.lower() not in ("hicolor", "locolor", "default"))
    families: dict[str, list[Path]] = defaultdict(list)
    for t in themes:
        family = t.name.lower().split("-")[0]
        families["papirus" if family == "epapirus" else family].append(t)
    return {f: min(ts, key=lambda p: (len(p.name), p.name)) for f, ts in sorted(families.items())}


def build_icons(out: Path, seed: int = 0, min_themes: int = 8, max_classes: int = 360) -> dict[str, int]:
    """Icon names drawn by at least `min_themes` theme families, a seeded choice of at most `max_classes`."""
    if shutil.which("rsvg-convert") is None:
        raise SystemExit("rsvg-convert is missing: apt-get install librsvg2-bin (or pass --install)")
    per_theme = {f: _theme_icons(t) for f, t in _theme_families().items()}
    count: dict[str, int] = defaultdict(int)
    for icons in per_theme.values():
        for n in icons:
            count[n] += 1
    names = sorted(n for n, c in count.items() if c >= min_themes)
    rng = np.random.default_rng(seed)
    if len(names) > max_classes:
        names = sorted(np.asarray(names)[rng.permutation(len(names))[:max_classes]].tolist())
    items: dict[str, list[Image.Image]] = {}
    for n in names:
        ims, digests = [], set()
        for t in sorted(per_theme):
            p = per_theme[t].get(n)
            im = _load_icon(p) if p is not None else None
            if im is not None and _digest(im) not in digests:  # themes that inherit the same file count once
                digests.add(_digest(im))
                ims.append(im)
        if len(ims) >= min_themes // 2:
            items[n] = ims
    if len(items) < 10:
        raise SystemExit("too few icon names shared by the installed themes: install PACKAGES['icons']")
    test = _split_classes(list(items), len(items) // 2, seed)
    return _write(out, test, items)


# ----------------------------------------------------------------------------------------------------- photos
def _wallpapers() -> list[Path]:
    """One file per photograph: the largest picture of each folder that holds several sizes of one wallpaper."""
    roots = [Path("/usr/share/backgrounds"), Path("/usr/share/wallpapers"), Path("/usr/share/lomiri/wallpapers")]
    files = [p for r in roots if r.is_dir() for p in r.rglob("*")
             if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp") and p.is_file() and not p.is_symlink()]
    by_dir: dict[Path, list[Path]] = defaultdict(list)
    for p in files:
        # plasma wallpapers: NAME/contents/images/1920x1080.jpg, ... one photograph in many sizes
        key = p.parent.parent.parent if p.parent.name == "images" and p.parent.parent.name == "contents" else p
        by_dir[key].append(p)
    chosen = []
    for key in sorted(by_dir):
        chosen.append(max(by_dir[key], key=lambda q: q.stat().st_size))
    return chosen


def build_photos(out: Path, seed: int = 0, patches: int = 24, min_side: int = 720) -> dict[str, int]:
    rng = np.random.default_rng(seed)
    items: dict[str, list[Image.Image]] = {}
    digests = set()
    for p in _wallpapers():
        try:
            with Image.open(p) as im:
                im.draft("RGB", (1600, 1600))
                im = im.convert("RGB")
        except OSError:
            continue
        w, h = im.size
        if min(w, h) < min_side:
            continue
        small = im.resize((32, 32))
        d = _digest(small)
        arr = np.asarray(small, dtype=np.float32)
        if d in digests or arr.std() < 12:
            continue  # the same picture twice, or a flat gradient with nothing to recognise
        digests.add(d)
        crops = []
        for _ in range(patches):
            side = int(min(w, h) * rng.uniform(0.25, 0.5))
            x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
            crops.append(im.crop((x, y, x + side, y + side)).resize((SIZE, SIZE), Image.LANCZOS))
        name = hashlib.sha1(str(p).encode()).hexdigest()[:6] + "_" + "".join(
            c if c.isalnum() else "_" for c in p.stem)[:40]
        items[name] = crops
    if len(items) < 10:
        raise SystemExit("too few photographs: install PACKAGES['photos']")
    test = _split_classes(list(items), len(items) // 2, seed)
    return _write(out, test, items)


BUILDERS = {"glyphs": build_glyphs, "icons": build_icons, "photos": build_photos}


def ensure_task(root: Path, name: str) -> Path:
    """The task folder under `root`, built on first use (a ``.done`` marker says it is complete)."""
    out = root / name
    if (out / ".done").is_file():
        return out
    if out.exists():
        shutil.rmtree(out)
    counts = BUILDERS[name](out)
    n_tr = len(list((out / "train").iterdir()))
    n_te = len(list((out / "test").iterdir()))
    (out / ".done").write_text(f"{n_tr} train classes, {counts['train']} images; "
                               f"{n_te} test classes, {counts['test']} images\n")
    return out


def describe(task_dir: Path) -> str:
    return (task_dir / ".done").read_text().strip()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--tasks", default=",".join(TASKS))
    p.add_argument("--install", action="store_true", help="apt-get install the packages first (root)")
    a = p.parse_args(argv)
    tasks = tuple(t for t in a.tasks.split(",") if t)
    if a.install:
        install(tasks)
    for t in tasks:
        d = ensure_task(a.out, t)
        print(f"{t}: {describe(d)} -> {d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
