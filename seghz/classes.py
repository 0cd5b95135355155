"""Class schemes, palettes and crosswalks, loaded from the JSON files in ``seghz/schemes``.

A scheme lists its classes in training order. Each class has the ``id`` it carries in label files of
that scheme (hz20 files hold 1..20, GID files 0..14, ...), a name and an RGB colour. Inside SegHZ a
label raster always holds *class indices* 0..C-1 in scheme order, with 255 = ignore. ``Scheme.lut``
turns file ids into indices; the scheme's unlabelled ids become 255 and ids it does not know are an
error (see :func:`Scheme.ids_to_index`).

Crosswalks (``crosswalks.json``) map file ids of one scheme to file ids of another; chains are
composed automatically (hz20 -> hz14 -> hz11 -> hz7).
"""
from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, replace
from functools import cache, lru_cache
from pathlib import Path

import numpy as np

from seghz.errors import BadInputError, SchemeMismatchError

IGNORE = 255
SCHEME_DIR = Path(__file__).parent / "schemes"


@dataclass(frozen=True)
class Scheme:
    """One class scheme. Indices are positions in ``names``; ``ids`` are the values in label files."""

    name: str
    title: str
    names: tuple[str, ...]
    ids: tuple[int, ...]
    colors: tuple[tuple[int, int, int], ...]
    unlabelled_ids: tuple[int, ...] = ()
    unlabelled_colors: tuple[tuple[int, int, int], ...] = ()
    notes: str = ""
    display_colors: tuple[tuple[int, int, int], ...] | None = None  # hand-picked "distinct" screen colours, if any

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @property
    def lut(self) -> np.ndarray:
        """uint16 look-up table file id -> index (255 = ignore, 256 = unknown id)."""
        lut = np.full(256, 256, np.uint16)
        for u in self.unlabelled_ids:
            lut[u] = IGNORE
        for i, cid in enumerate(self.ids):
            lut[cid] = i
        return lut

    def palette(self) -> np.ndarray:
        """(256, 3) uint8 colour table indexed by class index; ignore is black."""
        pal = np.zeros((256, 3), np.uint8)
        pal[: self.num_classes] = np.array(self.colors, np.uint8)
        return pal

    def hex_colors(self) -> list[str]:
        return ["#%02x%02x%02x" % tuple(c) for c in self.colors]

    def ids_to_index(self, ids: np.ndarray, source: str = "<array>") -> np.ndarray:
        """Map a uint8 id mask (file ids of this scheme) to class indices; unknown ids raise."""
        ids = np.asarray(ids)
        if ids.dtype != np.uint8:
            if ids.size and (ids.min() < 0 or ids.max() > 255):
                raise BadInputError(source, f"label values must be 0..255, found {ids.min()}..{ids.max()}")
            ids = ids.astype(np.uint8)
        out = self.lut[ids]
        bad = out == 256
        if bad.any():
            ys, xs = np.nonzero(bad)
            vals = sorted(set(np.unique(ids[bad]).tolist()))
            raise BadInputError(
                source,
                f"{int(bad.sum())} pixel(s) hold class id(s) {vals[:10]} that scheme '{self.name}' does not define "
                f"(valid ids: {list(self.ids)}, unlabelled: {list(self.unlabelled_ids)}); first at row {ys[0]}, col {xs[0]}",
            )
        return out.astype(np.uint8)

    def index_to_ids(self, index: np.ndarray, unlabelled: int | None = None) -> np.ndarray:
        """Inverse of :meth:`ids_to_index`; ignore becomes the first unlabelled id (or 255)."""
        lut = np.full(256, unlabelled if unlabelled is not None else (self.unlabelled_ids[0] if self.unlabelled_ids else 255), np.uint8)
        lut[: self.num_classes] = np.array(self.ids, np.uint8)
        return lut[np.asarray(index, np.uint8)]

    def colorize(self, index: np.ndarray) -> np.ndarray:
        """Class-index mask -> RGB image in the scheme's colours (ignore = black)."""
        return self.palette()[np.asarray(index, np.uint8)]

    def decode_rgb(self, rgb: np.ndarray, source: str = "<array>") -> np.ndarray:
        """Decode an RGB palette mask by exact colour. Unknown colours raise with count and first position."""
        rgb = np.asarray(rgb)
        if rgb.ndim != 3 or rgb.shape[2] < 3:
            raise BadInputError(source, f"an RGB palette mask needs 3 channels, got shape {rgb.shape}")
        if rgb.dtype != np.uint8:
            if rgb.size and (rgb[..., :3].min() < 0 or rgb[..., :3].max() > 255):
                raise BadInputError(source, f"palette mask values must be 0..255 per channel, found {rgb.min()}..{rgb.max()}")
        rgb = rgb[..., :3].astype(np.uint32)
        code = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
        # the scheme's colours as sorted 24-bit codes and what each decodes to (a class colour wins over an
        # unlabelled one; of two classes sharing a colour the later wins); each pixel's code is looked up by binary
        # search and checked for equality -- O(pixels x log(colours)), no sort of the pixels
        table: dict[int, int] = {}
        for c in self.unlabelled_colors:
            table[(c[0] << 16) | (c[1] << 8) | c[2]] = IGNORE
        if self.unlabelled_ids and not self.unlabelled_colors:
            table[0] = IGNORE  # black = unlabelled for id-based schemes (hz: id 0 is black)
        for i, c in enumerate(self.colors):
            table[(c[0] << 16) | (c[1] << 8) | c[2]] = i
        keys = np.array(sorted(table), np.uint32)
        values = np.array([table[k] for k in keys.tolist()], np.int32)
        if code.size and len(keys):
            pos = np.searchsorted(keys, code)
            np.minimum(pos, len(keys) - 1, out=pos)
            out = np.where(keys[pos] == code, values[pos], np.int32(-1))
        else:
            out = np.full(code.shape, -1, np.int32)
        bad = out < 0
        if bad.any():
            ys, xs = np.nonzero(bad)
            y, x = int(ys[0]), int(xs[0])
            col = tuple(int(v) for v in rgb[y, x])
            raise BadInputError(
                source,
                f"{int(bad.sum())} pixel(s) have colours that are not in scheme '{self.name}'; "
                f"first at row {y}, col {x} with RGB {col}",
            )
        return out.astype(np.uint8)

    def for_display(self, palette: str = "study") -> Scheme:
        """This scheme with the colours of a display ``palette`` (:data:`PALETTES`), for drawing only: ``study``
        is the scheme's own (the colours of its label files); ``distinct`` is the scheme file's hand-picked
        ``display_color`` of each class when it has them (hz7: tan open area, light green grass, dark green forest in
        place of three blues), else the study's colours with those the eye cannot tell from an earlier class's moved
        (:func:`distinct_colors`). Never decode or write label files with the result."""
        if palette not in PALETTES:
            raise ValueError(f"unknown palette '{palette}'; choose from {', '.join(PALETTES)}")
        if palette == "study":
            return self
        disp = self.display_colors
        if disp is None:  # e.g. a scheme rebuilt from a checkpoint's metadata: the registry's, when it is the same
            reg = _registry().get(self.name)
            if reg is not None and (reg.names, reg.colors) == (self.names, self.colors):
                disp = reg.display_colors
        return replace(self, colors=disp or distinct_colors(self.colors))

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "names": list(self.names),
            "ids": list(self.ids),
            "colors": [list(c) for c in self.colors],
        }


PALETTES = ("study", "distinct")
MIN_DELTA_E = 40.0  # CIE76 colour difference that "distinct" keeps between any two classes (≈ 2.3 is a just-noticeable one)


def srgb_to_lab(rgb) -> np.ndarray:
    """CIE L*a*b* (D65) of sRGB uint8 colours (..., 3)."""
    c = np.asarray(rgb, np.float64) / 255.0
    c = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    m = np.array([[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750],
                  [0.0193339, 0.1191920, 0.9503041]])
    xyz = c @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


@lru_cache(maxsize=64)
def distinct_colors(colors: tuple[tuple[int, int, int], ...], min_delta_e: float = MIN_DELTA_E
                    ) -> tuple[tuple[int, int, int], ...]:
    """Colours for the screen that keep every class apart, changing the study's as little as possible.

    In class order, a colour at least ``min_delta_e`` (CIE76 ΔE) from every colour already kept (and from black,
    which draws "ignore") is kept; one
    closer (hz7's Green_land and Forest differ by ΔE 13, two blues side by side) is replaced by the nearest colour
    of a 216-colour grid that is far enough from all kept ones (if none is, the grid colour farthest from them).
    Deterministic: the same scheme always gets the same colours."""
    levels = np.arange(0, 256, 51)
    grid = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(-1, 3)
    grid_lab = srgb_to_lab(grid)
    kept: list[tuple[int, int, int]] = []
    kept_lab: list[np.ndarray] = [srgb_to_lab((0, 0, 0))]  # black is "ignore" on the screen: keep away from it too
    for c in colors:
        lab = srgb_to_lab(c)
        if all(np.linalg.norm(lab - k) >= min_delta_e for k in kept_lab):
            pick = tuple(int(v) for v in c)
        else:
            gap = np.min(np.linalg.norm(grid_lab[:, None, :] - np.array(kept_lab)[None], axis=2), axis=1)
            ok = np.flatnonzero(gap >= min_delta_e)
            i = ok[np.argmin(np.linalg.norm(grid_lab[ok] - lab, axis=1))] if ok.size else int(np.argmax(gap))
            pick = tuple(int(v) for v in grid[i])
        kept.append(pick)  # type: ignore[arg-type]
        kept_lab.append(srgb_to_lab(pick))
    return tuple(kept)


def _load(path: Path) -> Scheme:
    d = json.loads(path.read_text())
    cls = d["classes"]
    return Scheme(
        name=d["name"],
        title=d.get("title", d["name"]),
        names=tuple(c["name"] for c in cls),
        ids=tuple(int(c["id"]) for c in cls),
        colors=tuple(tuple(int(v) for v in c["color"]) for c in cls),
        unlabelled_ids=tuple(int(v) for v in d.get("unlabelled_ids", [])),
        unlabelled_colors=tuple(tuple(int(v) for v in c) for c in d.get("unlabelled_colors", [])),
        notes=d.get("notes", ""),
        display_colors=(tuple(tuple(int(v) for v in c["display_color"]) for c in cls)
                        if all("display_color" in c for c in cls) else None),
    )


@cache
def _registry() -> dict[str, Scheme]:
    out = {}
    for p in sorted(SCHEME_DIR.glob("*.json")):
        if p.name == "crosswalks.json":
            continue
        s = _load(p)
        out[s.name] = s
    return out


def scheme_names() -> list[str]:
    return list(_registry())


def get_scheme(name: str) -> Scheme:
    reg = _registry()
    if name not in reg:
        raise KeyError(f"unknown class scheme '{name}'; known: {', '.join(reg)}")
    return reg[name]


@cache
def _crosswalk_edges() -> dict[str, dict[str, dict]]:
    raw = json.loads((SCHEME_DIR / "crosswalks.json").read_text())
    edges: dict[str, dict[str, dict]] = {}
    for key, val in raw.items():
        src, dst = key.split("->")
        edges.setdefault(src, {})[dst] = val
    return edges


def crosswalk_path(src: str, dst: str) -> list[str] | None:
    """Shortest chain of schemes from ``src`` to ``dst`` through the crosswalk table, or None."""
    if src == dst:
        return [src]
    edges = _crosswalk_edges()
    prev = {src: None}
    q = deque([src])
    while q:
        cur = q.popleft()
        for nxt in edges.get(cur, {}):
            if nxt not in prev:
                prev[nxt] = cur
                if nxt == dst:
                    path = [dst]
                    while prev[path[-1]] is not None:
                        path.append(prev[path[-1]])
                    return path[::-1]
                q.append(nxt)
    return None


def index_crosswalk(src: str, dst: str) -> np.ndarray:
    """uint8 LUT of 256 entries mapping class *indices* of ``src`` to indices of ``dst`` (255 stays 255).

    Raises KeyError for an unknown scheme name, SchemeMismatchError when no crosswalk chain exists.
    """
    get_scheme(src), get_scheme(dst)  # "unknown class scheme 'gid16'", not "no crosswalk from 'gid16'"
    path = crosswalk_path(src, dst)
    if path is None:
        raise SchemeMismatchError(
            f"no crosswalk from scheme '{src}' to '{dst}'; known crosswalks: "
            + ", ".join(f"{a}->{b}" for a, d in _crosswalk_edges().items() for b in d)
        )
    s = get_scheme(src)
    # start: index -> file id of src
    cur = np.full(256, -1, np.int32)
    cur[: s.num_classes] = s.ids
    edges = _crosswalk_edges()
    for a, b in zip(path, path[1:]):
        m = {int(k): int(v) for k, v in edges[a][b]["map"].items()}
        cur = np.array([m.get(int(v), -1) if v >= 0 else -1 for v in cur], np.int32)
    d = get_scheme(dst)
    d_lut = d.lut
    out = np.full(256, IGNORE, np.uint8)
    for i, v in enumerate(cur):
        if v >= 0 and d_lut[v] < 256:
            out[i] = d_lut[v]
    out[IGNORE] = IGNORE
    return out


def crosswalk_notes(src: str, dst: str) -> list[str]:
    path = crosswalk_path(src, dst) or []
    e = _crosswalk_edges()
    return [f"{a}->{b}: {e[a][b].get('notes', '')}" for a, b in zip(path, path[1:])]
