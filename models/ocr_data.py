"""Synthetic, deterministic OCR data: text lines and pages rendered with every font matplotlib bundles that can
draw Latin text (DejaVu, STIX, Computer Modern; see ``font_files``), dark on light, low-contrast or light on dark.

The ground truth is known by construction. Words come from a word list written for this module (common English
words, no external text); they are split into two disjoint halves by a hash, one used only for calibration and
one only for evaluation, so calibration and evaluation never show the same word.
"""

from __future__ import annotations

import logging
import os
import string
import zlib
from functools import lru_cache
from typing import List, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

WORDS = """
the of and to in is was for on that with as by at from his her this which or are be had not but have were
they one all their there been has who more when will would said its into than them only other some time
could these two may then first any like our over such after most also made many before must through back
years where much your way well down should because each just those people how too little state good very
make world still own see men work long here get both between life being under never day same another know
while last might great old year off come since against go came right used take three states himself few
house use during without again place around however home small found thought went say part once general high
upon school every does got united left number course war until always away something fact though water less
public put think almost hand enough far took head yet government system better set told nothing night end why
called important side free next given four face ever room let going family later often keep night city
early toward body light behind course mind open began paper street market country young white present best
table question power money change interest order book business number point family voice friend morning water
garden river island bridge mountain forest valley harbor village station window kitchen library theater office
doctor teacher farmer painter writer sailor pilot baker student captain soldier driver singer dancer reader
apple orange lemon bread butter cheese coffee sugar honey pepper salt rice tomato potato carrot onion garlic
summer winter spring autumn monday friday sunday january march april june july august october december
north south east west center corner edge middle bottom top inside outside above below beyond across along
quick slow bright dark quiet loud warm cold soft hard heavy light sharp smooth rough empty full narrow wide
happy sad brave calm eager gentle honest kind proud clever simple strange sudden silent tender wild
red blue green yellow purple brown black silver golden pink gray violet crimson amber ivory
table chair pencil letter ticket basket bottle button candle carpet cloud engine feather flower hammer ladder
mirror needle pillow pocket rabbit saddle shadow shelf shovel signal spider stamp stone sweater thread tiger
tunnel wagon wallet whistle wire wolf anchor arrow badge barrel blanket bucket cabin canvas castle cellar
chimney compass cottage crystal dragon eagle falcon fence fiddle glove harvest helmet jacket jungle kettle
lantern magnet marble meadow medal orchard oyster palace parcel pebble planet puzzle rocket satchel scarf
spoon statue summit temple thunder tower trumpet umbrella velvet volcano walrus weaver wheel willow zebra
answer begin bring build carry catch choose climb collect cover create dance decide deliver describe design
discover dream drink drive enjoy explain explore fill finish fly follow gather grow guess help hold hurry
imagine invite join jump laugh learn listen measure mend move notice offer open paint pick plant play pour
prepare promise protect pull push reach read remember repair return ride rise run save search send share
shine sing sit sleep smile solve speak spend stand start stay study swim teach travel try turn visit wait
walk wander wash watch whisper wish wonder write yield account action advice amount animal army art attempt
balance basis beauty birth blood board branch breath brother camera cancer career chance chapter church
circle climate coast colour comfort concert contract control cotton county culture damage danger daughter
debate degree detail device dinner disease distance doubt effort energy error evening event example exchange
expert factor failure feeling figure finger flight focus forest format fortune freedom future gallery
glass growth guide habit health height history holiday horse hotel income island journey judge justice
knowledge language leader lesson level limit machine manner matter memory message method metal minute
model moment mother motion museum nature network notice object ocean option origin owner parent patient
pattern peace period person picture piece plenty pleasure poem policy pool powder practice pressure price
problem process product profit project proof purpose quality quarter radio range rate reason record region
report result rhythm safety sample scale scene science season secret sector sense series service shape
silence sister skill society soil solution source space speech spirit sport square stage standard star
story strength structure style subject success supply surface survey talent target task temple tension
theory thing thought topic total tourist trade training transport trouble truth union unit value variety
version victory view village vision visitor weather weight wheel whole winner wisdom wonder wood youth
"""

Box = Tuple[int, int, int, int]  # x0, y0, x1, y1 (x1, y1 exclusive)

LATIN = string.ascii_letters + string.digits  # what random_phrase writes, besides the space


@lru_cache(maxsize=None)
def word_pool(pool: int) -> Tuple[str, ...]:
    """The words of one pool (0 = calibration, 1 = evaluation): a fixed, disjoint half of WORDS by CRC32."""
    words = sorted({w for w in WORDS.split() if w.isalpha() and len(w) > 1})
    return tuple(w for w in words if zlib.crc32(w.encode()) % 2 == pool)


def font_dir() -> str:
    import matplotlib  # only for the location of its bundled fonts

    return os.path.join(matplotlib.get_data_path(), "fonts", "ttf")


def draws_latin(path: str) -> bool:
    """Whether the TrueType font at ``path`` draws every ASCII letter and digit as itself: its character map sends
    each to the glyph of the standard name (Adobe Glyph List: 'a', 'zero', ...), which has an outline, and the
    space advances. Symbol, size-variant and fallback fonts (other glyphs, or one glyph for all) and math italics
    (old-style figures, a zero-width space) fail."""
    from fontTools.agl import UV2AGL
    from fontTools.pens.boundsPen import BoundsPen
    from fontTools.ttLib import TTFont

    logging.getLogger("fontTools.ttLib.tables._h_e_a_d").setLevel(logging.ERROR)  # old TeX fonts' dates
    font = TTFont(path, lazy=True)
    cmap = font.getBestCmap() or {}
    glyphs = font.getGlyphSet()

    def has_outline(glyph: str) -> bool:
        pen = BoundsPen(glyphs)
        glyphs[glyph].draw(pen)
        return pen.bounds is not None

    space = cmap.get(ord(" "))
    return (space is not None and font["hmtx"][space][0] > 0
            and all(cmap.get(ord(c)) == UV2AGL[ord(c)] and has_outline(cmap[ord(c)]) for c in LATIN))


@lru_cache(maxsize=None)
def font_files() -> Tuple[str, ...]:
    """The .ttf files of matplotlib's font folder that draw Latin text (see draws_latin), sorted by name."""
    folder = font_dir()
    return tuple(f for f in sorted(os.listdir(folder)) if f.endswith(".ttf") and draws_latin(os.path.join(folder, f)))


@lru_cache(maxsize=None)
def _font(file: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(os.path.join(font_dir(), file), size)


def random_phrase(rng: np.random.Generator, pool: int, min_words: int = 1, max_words: int = 4) -> str:
    """1..max_words words from the pool, some Capitalised or UPPER-case, now and then a number."""
    words = word_pool(pool)
    out = []
    for _ in range(int(rng.integers(min_words, max_words + 1))):
        if rng.random() < 0.08:
            out.append(str(int(rng.integers(0, 10 ** int(rng.integers(1, 5))))))
            continue
        w = words[int(rng.integers(len(words)))]
        case = rng.random()
        out.append(w.upper() if case < 0.1 else w.capitalize() if case < 0.35 else w)
    return " ".join(out)


def draw_text(rng: np.random.Generator, text: str) -> Tuple[np.ndarray, int]:
    """Ink coverage (float32 0..1, tight around the glyphs' box) of ``text`` in a random font of 22-44 px."""
    fonts = font_files()
    font = _font(fonts[int(rng.integers(len(fonts)))], int(rng.integers(22, 45)))
    left, top, right, bottom = font.getbbox(text)
    mask = Image.new("L", (right - left, bottom - top), 0)
    ImageDraw.Draw(mask).text((-left, -top), text, font=font, fill=255)
    return np.asarray(mask, np.float32) / 255.0, font.size


def _degrade(rng: np.random.Generator, grey: np.ndarray) -> np.ndarray:
    """Light Gaussian blur (sigma 0..1 px) and Gaussian noise (sigma 0..6 grey levels), back to uint8."""
    img = Image.fromarray(np.clip(grey, 0, 255).astype(np.uint8))
    img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.0, 1.0))))
    noisy = np.asarray(img, np.float32) + rng.normal(0.0, rng.uniform(0.0, 6.0), (img.height, img.width))
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


LOW_CONTRAST_SHARE, INVERTED_SHARE = 0.15, 0.10


def _levels(rng: np.random.Generator) -> Tuple[float, float]:
    """(background, ink) grey levels: light paper and dark ink at least 80 levels apart; LOW_CONTRAST_SHARE of
    them 40-80 levels apart; INVERTED_SHARE light ink on a dark background, at least 90 apart."""
    kind = rng.random()
    if kind < INVERTED_SHARE:
        bg = int(rng.integers(0, 90))
        return float(bg), float(rng.integers(bg + 90, 256))
    if kind < INVERTED_SHARE + LOW_CONTRAST_SHARE:
        bg = int(rng.integers(140, 256))
        return float(bg), float(bg - rng.integers(40, 81))
    bg = int(rng.integers(170, 256))
    return float(bg), float(rng.integers(0, bg - 80))


def render_line(rng: np.random.Generator, text: str) -> np.ndarray:
    """A cropped text-line image (H, W, 3) uint8 BGR with a small random margin, as a detector crop looks."""
    ink, _ = draw_text(rng, text)
    mx, my = int(rng.integers(4, 13)), int(rng.integers(3, 9))
    bg, fg = _levels(rng)
    alpha = np.pad(ink, ((my, my), (mx, mx)))
    grey = _degrade(rng, bg + (fg - bg) * alpha)
    return np.repeat(grey[:, :, None], 3, axis=2)


def render_page(rng: np.random.Generator, pool: int, size: int = 640, max_lines: int = 9
                ) -> Tuple[np.ndarray, List[Box], List[str]]:
    """A size x size BGR page with 3..max_lines non-overlapping text lines.

    Returns (page uint8 [size,size,3], ground-truth ink boxes, texts). Lines keep a gap of half a line height
    to their neighbours so each is one separate region."""
    bg, fg = _levels(rng)
    ramp = np.linspace(0, rng.uniform(-25, 25), size, dtype=np.float32)  # uneven lighting
    grey = np.full((size, size), bg, np.float32) + (ramp[:, None] if rng.random() < 0.5 else ramp[None, :])
    alpha = np.zeros((size, size), np.float32)
    boxes: List[Box] = []
    texts: List[str] = []
    for _ in range(int(rng.integers(3, max_lines + 1))):
        text = random_phrase(rng, pool, 1, 4)
        ink, font_size = draw_text(rng, text)
        h, w = ink.shape
        if w > size - 20:
            continue
        gap = font_size // 2
        for _attempt in range(30):
            x, y = int(rng.integers(10, size - 10 - w + 1)), int(rng.integers(10, size - 10 - h + 1))
            if all(x + w + gap <= b[0] or b[2] + gap <= x or y + h + gap <= b[1] or b[3] + gap <= y for b in boxes):
                alpha[y:y + h, x:x + w] = ink
                boxes.append((x, y, x + w, y + h))
                texts.append(text)
                break
    grey = _degrade(rng, grey + (fg - grey) * alpha)
    return np.repeat(grey[:, :, None], 3, axis=2), boxes, texts
