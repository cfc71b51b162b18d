"""Drawing of the synthetic dermatology images: skin of a Fitzpatrick type on a body-site backdrop, with lesions.

Every visible property is drawn at a scale the tiny default can see at 112 px with 8-px patches: large lesions span
4–5 patches, sizes differ by a factor of two, "few" (2–3) and "multiple" (6–9) lesions never overlap, and grouped,
scattered and linear layouts are geometrically distinct. Lengths are given in pixels at :data:`REFERENCE_SIZE` and
scale with the image, except the implicit cue, whose period is fixed in pixels.

Pure numpy on one ``(H, W, 3)`` float32 canvas per image; :func:`render` returns uint8, :func:`draw` also the lesion
mask (the pixels the lesion layer covers at least half) from the same pass. All randomness comes from the
``numpy.random.Generator`` passed in, so an image is a function of its generator's state.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "BACKDROP_COLOR",
    "COLOR_OPACITY",
    "HAIR_COLOR",
    "IMPLICIT_AMPLITUDE",
    "IMPLICIT_PERIOD",
    "LESION_COLORS",
    "LESION_MASK_OPACITY",
    "PIGMENT_DARKENING",
    "REFERENCE_SIZE",
    "SIZE_RADII",
    "SKIN_TONES",
    "Lesion",
    "Region",
    "Rendering",
    "draw",
    "fallback_layout",
    "implicit_pattern",
    "lesion_region",
    "outline_extent",
    "place_lesions",
    "render",
    "skin_canvas",
]

REFERENCE_SIZE = 112
"""Image side (px) at which the lengths below are given; they scale linearly with the image side."""

SKIN_TONES: dict[int, tuple[float, float, float]] = {
    1: (246, 222, 204),
    2: (232, 193, 164),
    3: (207, 162, 125),
    4: (171, 122, 86),
    5: (122, 82, 56),
    6: (76, 52, 38),
}
"""Base RGB of Fitzpatrick skin types I–VI."""

LESION_COLORS: dict[str, tuple[float, float, float]] = {
    "red": (196, 44, 48),
    "pink": (236, 130, 146),
    "brown": (118, 68, 38),
    "black": (30, 22, 24),
    "pearly": (238, 222, 220),
    "depigmented": (252, 248, 244),
}
"""Target RGB of each lesion colour. Pigment colours (brown, black) darken the skin toward the target and never
lighten it (see :data:`PIGMENT_DARKENING`); the others cover the skin at :data:`COLOR_OPACITY`."""

PIGMENT_DARKENING: dict[str, float] = {"brown": 0.62, "black": 0.3}
"""A pigmented lesion is at most this fraction of the skin's brightness (per channel), so it stays darker than its
surroundings on every skin type: brown on type VI skin is a deep brown, black is darker still."""

COLOR_OPACITY = 0.85
"""Share of the target colour in a non-pigment lesion (the rest is the skin below)."""

BACKDROP_COLOR = (58, 66, 84)
"""Cloth around the leg and the hand."""

HAIR_COLOR = (30, 24, 20)
"""Hair strands of the scalp backdrop."""

SIZE_RADII: dict[str, tuple[float, float]] = {"small": (3.5, 5.0), "medium": (6.5, 9.5), "large": (13.0, 18.0)}
"""Nominal lesion radius range (px at :data:`REFERENCE_SIZE`) per size term: diameters of about 1, 2 and 4 patches."""

IMPLICIT_PERIOD = 4
"""Period in pixels of the implicit cue, a dotted micro-grid that no caption field names; aligned with the pixel
grid and half a tiny-default patch, so every 8-px patch inside a lesion holds the same two periods."""

IMPLICIT_AMPLITUDE = 0.5
"""Relative contrast of the implicit micro-grid (the lesion's brightness is multiplied by 1 ± this)."""

LESION_MASK_OPACITY = 0.5
"""A pixel is a lesion pixel (:attr:`Rendering.lesion`) when the lesion layer covers it at least this much: the
lesion body is at least half of what the pixel shows. On a soft (ill-defined) edge this is the nominal outline
(normalised distance 1); the surrounding halo (erythema, hyperpigmentation) is never lesion."""

_MARGIN = 3.0
_GROUPED_GAP = (1.0, 3.0)
_SCATTERED_MIN_GAP = {"few": 16.0, "multiple": 10.0}
_LINEAR_GAP = (1.0, 3.0)
_LEG_EDGES = ((0.12, 0.16), (0.84, 0.88))
_PALM_TOP = 0.32
_FINGER_COUNT = 4
_ILL_DEFINED_SOFTNESS = 0.45
_SHAPE_EXTENT = {"round": 1.0, "oval": 1.2, "annular": 1.0, "irregular": 1.36}  # the outline's largest radius
_BORDER_EXTENT = {"irregular": 1.15, "ill-defined": 1.15}  # notches; the opaque part of a soft edge
_SHRINKS = (1.0, 0.92, 0.84, 0.76, 0.68, 0.6)
_TRIES = 4
_CANDIDATES = 96


@dataclass(frozen=True)
class Lesion:
    """One lesion: centre ``(y, x)`` and nominal radius in pixels, orientation in radians, outline phases."""

    y: float
    x: float
    radius: float
    angle: float
    phases: tuple[float, float, float, float]


@dataclass(frozen=True)
class Region:
    """The box (pixels, inclusive edges) that whole lesions must lie in: the skin of a backdrop minus a margin.

    ``scale``: pixels of the image per pixel at :data:`REFERENCE_SIZE` (gaps between lesions scale with it).
    """

    top: float
    bottom: float
    left: float
    right: float
    scale: float


def lesion_region(size: int, location: str) -> Region:
    """Where lesions may lie on the backdrop of ``location`` (``back``, ``scalp``, ``leg``, ``hand``) in a ``size`` image.

    The leg's box is inside its narrowest possible outline; the hand's is the palm below the fingers.
    """
    scale = size / REFERENCE_SIZE
    margin = _MARGIN * scale
    top, bottom, left, right = margin, size - 1 - margin, margin, size - 1 - margin
    if location == "leg":
        left, right = _LEG_EDGES[0][1] * size + margin, _LEG_EDGES[1][0] * size - margin
    elif location == "hand":
        top = _PALM_TOP * size + margin
    elif location not in ("back", "scalp"):
        raise ValueError(f"location must be one of back, scalp, leg, hand, got {location!r}")
    return Region(top, bottom, left, right, scale)


def outline_extent(shape: str, border: str) -> float:
    """The farthest a lesion of ``shape`` and ``border`` reaches, in units of its nominal radius.

    For an ill-defined border this is where the fading edge is down to about a quarter of full opacity: the faint
    margins of two neighbouring ill-defined lesions may meet, their bodies never do.
    """
    return _SHAPE_EXTENT[shape] * _BORDER_EXTENT.get(border, 1.0)


def place_lesions(
    count_range: tuple[int, int],
    radius_range: tuple[float, float],
    extent: float,
    distribution: str,
    region: Region,
    rng: np.random.Generator,
) -> list[Lesion]:
    """Lesions laid out as ``distribution`` says, inside ``region``, never touching each other.

    Args:
        count_range: inclusive range of the number of lesions; the count is drawn in it and lowered (never below
            its low end) only when the layout does not fit.
        radius_range: nominal radius range in pixels (already scaled to the image); radii shrink toward its low end
            when the layout does not fit.
        extent: how far a lesion reaches in units of its radius (see :func:`outline_extent`).
        distribution: ``localized`` (one lesion near the middle), ``grouped`` (a close cluster, gaps of 1–3 px),
            ``scattered`` (spread out: gaps of at least 16 px between 2–3 lesions, 10 px between more) or
            ``linear`` (evenly spaced on a line, gaps of 1–3 px).
        region: the box whole lesions must lie in.
        rng: the source of randomness.

    The random layout is retried (4 times) with radii shrinking in steps of 8 % (never below the range), then with
    one lesion less, and so on. When no random layout fits, the deterministic layout of :func:`fallback_layout`
    (lesions of the smallest radius on an even grid or line) is used, from the drawn count down. It fits every
    combination of attributes the synthetic generator asks for at every image size (a test checks this), so the
    generator never fails. Returns the lesions, ``len`` within ``count_range``.

    Raises:
        ValueError: not even the fallback fits (lesions too large for ``region``: arguments the generator never
            passes).
    """
    low, high = radius_range
    drawn = int(rng.integers(count_range[0], count_range[1] + 1))
    base = rng.uniform(low, high)
    for count, shrink, _ in itertools.product(range(drawn, count_range[0] - 1, -1), _SHRINKS, range(_TRIES)):
        radii = np.clip(base * shrink * rng.uniform(0.9, 1.1, count), low, high)
        centres = _layout(distribution, radii * extent, region, rng)
        if centres is not None:
            break
    else:
        for count in range(drawn, count_range[0] - 1, -1):
            radii = np.full(count, float(low))
            centres = fallback_layout(distribution, count, low * extent, region)
            if centres is not None:
                break
        else:
            raise ValueError(
                f"cannot place {count_range} lesions of radius {radius_range} as {distribution!r} in {region}, "
                "not even on the fallback grid"
            )
    return [
        Lesion(y=float(y), x=float(x), radius=float(radius), angle=float(rng.uniform(0, np.pi)),
               phases=tuple(float(p) for p in rng.uniform(0, 2 * np.pi, 4)))
        for (y, x), radius in zip(centres, radii)
    ]


def _grid_shape(count: int, pitch: float, width: float, height: float, spread: bool) -> tuple[int, int] | None:
    """``(rows, columns)`` of the grid for ``count`` lesions ``pitch`` apart whose centres span at most ``width`` by
    ``height``: the most compact one (``spread``: the one with the fewest rows that fits), or ``None``."""
    shapes = [(rows, -(-count // rows)) for rows in range(1, count + 1)]
    fitting = [(rows, cols) for rows, cols in shapes if (cols - 1) * pitch <= width and (rows - 1) * pitch <= height]
    if not fitting:
        return None
    return fitting[0] if spread else min(fitting, key=lambda shape: (max(shape) - min(shape), shape[0]))


def fallback_layout(distribution: str, count: int, reach: float, region: Region) -> np.ndarray | None:
    """Deterministic centres ``(count, 2)`` for ``count`` lesions reaching ``reach`` px, or ``None`` if none fits.

    localized: the middle of the region. grouped: a compact grid with gaps of 2 px (at 112 px), centred.
    scattered: a grid spread over the whole region (gaps at least the scattered minimum). linear: evenly spaced
    along the region's diagonal with gaps of 2 px. Every layout keeps the distribution's rule (gaps, line) and
    its lesions inside ``region``.
    """
    lower = np.array([region.top + reach, region.left + reach])
    upper = np.array([region.bottom - reach, region.right - reach])
    if np.any(lower > upper) or count < 1:
        return None
    middle = (lower + upper) / 2
    room_y, room_x = upper - lower  # where centres may lie
    if distribution == "localized":
        return middle[None, :] if count == 1 else None
    if distribution == "linear":
        step = 2 * reach + np.mean(_LINEAR_GAP) * region.scale
        diagonal = float(np.hypot(room_y, room_x))
        if (count - 1) * step > diagonal:
            return None
        direction = np.array([room_y, room_x]) / diagonal if diagonal > 0 else np.array([0.0, 1.0])
        centres = middle + ((np.arange(count) - (count - 1) / 2) * step)[:, None] * direction
    elif distribution in ("grouped", "scattered"):
        gap = (np.mean(_GROUPED_GAP) if distribution == "grouped"
               else _SCATTERED_MIN_GAP["few" if count <= 3 else "multiple"]) * region.scale
        pitch = 2 * reach + gap
        shape = _grid_shape(count, pitch, room_x, room_y, spread=distribution == "scattered")
        if shape is None:
            return None
        rows, cols = shape
        if distribution == "grouped":
            ys = middle[0] + (np.arange(rows) - (rows - 1) / 2) * pitch
            xs = middle[1] + (np.arange(cols) - (cols - 1) / 2) * pitch
        else:
            ys = np.linspace(lower[0], upper[0], rows) if rows > 1 else middle[:1]
            xs = np.linspace(lower[1], upper[1], cols) if cols > 1 else middle[1:]
        centres = np.array([(y, x) for y in ys for x in xs])[:count]
    else:
        raise ValueError(f"distribution must be localized, grouped, scattered or linear, got {distribution!r}")
    return centres if np.all((centres >= lower - 1e-9) & (centres <= upper + 1e-9)) else None


def _layout(distribution: str, reach: np.ndarray, region: Region, rng: np.random.Generator) -> np.ndarray | None:
    """Centres ``(count, 2)`` for lesions reaching ``reach`` pixels, or ``None`` when this attempt does not fit."""
    if distribution == "localized":
        return _localized(reach, region, rng)
    if distribution == "grouped":
        return _grouped(reach, region, rng)
    if distribution == "scattered":
        return _scattered(reach, region, rng)
    if distribution == "linear":
        return _linear(reach, region, rng)
    raise ValueError(f"distribution must be localized, grouped, scattered or linear, got {distribution!r}")


def _bounds(region: Region, reach: float) -> tuple[np.ndarray, np.ndarray] | None:
    """Lowest and highest admissible centre (y, x) for a lesion reaching ``reach``, or ``None`` when none is."""
    lower = np.array([region.top + reach, region.left + reach])
    upper = np.array([region.bottom - reach, region.right - reach])
    return None if np.any(lower > upper) else (lower, upper)


def _clearance(candidates: np.ndarray, reach: float, centres: np.ndarray, reaches: np.ndarray) -> np.ndarray:
    """Smallest gap (px) between each candidate lesion ``(m, 2)`` and the placed ones; +inf when none is placed."""
    if len(centres) == 0:
        return np.full(len(candidates), np.inf)
    distance = np.linalg.norm(candidates[:, None, :] - centres[None, :, :], axis=-1)
    return (distance - reach - reaches[None, :]).min(axis=1)


def _localized(reach: np.ndarray, region: Region, rng: np.random.Generator) -> np.ndarray | None:
    bounds = _bounds(region, float(reach[0]))
    if bounds is None:
        return None
    lower, upper = bounds
    middle, half = (lower + upper) / 2, (upper - lower) * 0.3
    return (middle + rng.uniform(-1, 1, 2) * half)[None, :]


def _grouped(reach: np.ndarray, region: Region, rng: np.random.Generator) -> np.ndarray | None:
    """A cluster: each lesion next to one already placed, with a small gap, none overlapping."""
    bounds = _bounds(region, float(reach[0]))
    if bounds is None:
        return None
    lower, upper = bounds
    middle, half = (lower + upper) / 2, (upper - lower) * 0.35
    centres = [middle + rng.uniform(-1, 1, 2) * half]
    for index in range(1, len(reach)):
        bounds = _bounds(region, float(reach[index]))
        if bounds is None:
            return None
        anchors = rng.integers(index, size=_CANDIDATES)
        angle = rng.uniform(0, 2 * np.pi, _CANDIDATES)
        gap = rng.uniform(*_GROUPED_GAP, _CANDIDATES) * region.scale
        distance = reach[index] + reach[anchors] + gap
        candidates = np.asarray(centres)[anchors] + distance[:, None] * np.column_stack([np.sin(angle), np.cos(angle)])
        inside = np.all((candidates >= bounds[0]) & (candidates <= bounds[1]), axis=1)
        free = _clearance(candidates, reach[index], np.asarray(centres), reach[:index]) >= _GROUPED_GAP[0] * region.scale * 0.99
        valid = np.flatnonzero(inside & free)
        if len(valid) == 0:
            return None
        centres.append(candidates[valid[0]])
    return np.asarray(centres)


def _scattered(reach: np.ndarray, region: Region, rng: np.random.Generator) -> np.ndarray | None:
    """Spread out: each lesion at the best of many uniform candidates (farthest from the others), with a wide gap."""
    centres = np.zeros((0, 2))
    for index in range(len(reach)):
        bounds = _bounds(region, float(reach[index]))
        if bounds is None:
            return None
        candidates = rng.uniform(bounds[0], bounds[1], (_CANDIDATES, 2))
        clearance = _clearance(candidates, reach[index], centres, reach[:index])
        best = int(np.argmax(clearance))
        minimum = _SCATTERED_MIN_GAP["few" if len(reach) <= 3 else "multiple"]
        if clearance[best] < minimum * region.scale:
            return None
        centres = np.vstack([centres, candidates[best]])
    return centres


def _linear(reach: np.ndarray, region: Region, rng: np.random.Generator) -> np.ndarray | None:
    """Evenly spaced along a line through the middle, in a random direction along which the line fits."""
    height, width = region.bottom - region.top, region.right - region.left
    step = 2 * reach.max() + rng.uniform(*_LINEAR_GAP) * region.scale
    spread = (len(reach) - 1) * step  # distance between the first and the last centre
    angles = rng.uniform(0, np.pi, _CANDIDATES)
    room_y, room_x = height - 2 * reach.max(), width - 2 * reach.max()  # where centres may lie
    fits = (spread * np.abs(np.sin(angles)) <= room_y) & (spread * np.abs(np.cos(angles)) <= room_x)
    if not fits.any():
        return None
    angle = angles[np.argmax(fits)]
    direction = np.array([np.sin(angle), np.cos(angle)])
    slack = (np.array([room_y, room_x]) - spread * np.abs(direction)) / 2  # room to shift the line off the middle
    middle = np.array([(region.top + region.bottom) / 2, (region.left + region.right) / 2])
    offsets = (np.arange(len(reach)) - (len(reach) - 1) / 2) * step
    centres = middle + rng.uniform(-1, 1, 2) * slack * 0.8 + offsets[:, None] * direction
    lower = np.column_stack([region.top + reach, region.left + reach])
    upper = np.column_stack([region.bottom - reach, region.right - reach])
    return centres if np.all((centres >= lower) & (centres <= upper)) else None


def _smoothstep(edge0: float, edge1: float, value: np.ndarray) -> np.ndarray:
    t = np.clip((value - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _value_noise(size: int, cell: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth random field ``(size, size)`` in [-1, 1] with features of about ``cell`` pixels (bilinear lattice)."""
    coarse = int(np.ceil(size / cell)) + 2
    lattice = rng.uniform(-1, 1, (coarse, coarse)).astype(np.float32)
    position = np.arange(size, dtype=np.float32) / cell
    index = position.astype(int)
    weight = position - index
    rows = lattice[index] * (1 - weight)[:, None] + lattice[index + 1] * weight[:, None]
    return rows[:, index] * (1 - weight)[None, :] + rows[:, index + 1] * weight[None, :]


def skin_canvas(size: int, skin_type: int, location: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Skin of ``skin_type`` on the backdrop of ``location``, before any lesion.

    Returns the canvas ``(size, size, 3)`` float32 in 0–255 and the skin mask ``(size, size)`` bool. Skin has a
    lighting gradient, blotchy mottling (~16 px) and fine grain (1 px); the backdrop is drawn by :func:`_backdrop`.
    """
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    tone = np.asarray(SKIN_TONES[skin_type], np.float32)
    slope = rng.uniform(-0.08, 0.08, 2).astype(np.float32)
    shading = 1.0 + slope[0] * (yy - 0.5) + slope[1] * (xx - 0.5) + 0.025 * _value_noise(size, 16 * size / 112, rng)
    grain = 1.0 + rng.normal(0, 0.015, (size, size)).astype(np.float32)
    canvas = tone * (shading * grain)[..., None]
    skin = _backdrop(canvas, yy, xx, location, rng)
    return canvas, skin


def _backdrop(canvas: np.ndarray, yy: np.ndarray, xx: np.ndarray, location: str, rng: np.random.Generator) -> np.ndarray:
    """Draw the body site into ``canvas`` (in place) and return its skin mask.

    back: skin to every edge (nothing else); scalp: skin under dark hair strands; leg: a
    vertical limb, shaded as a cylinder, between cloth; hand: a palm with four fingers above it, against cloth.
    """
    size = canvas.shape[0]
    skin = np.ones((size, size), bool)
    if location == "scalp":
        _draw_hair(canvas, rng)
    elif location == "leg":
        left, right = rng.uniform(*_LEG_EDGES[0]), rng.uniform(*_LEG_EDGES[1])
        across = (xx - (left + right) / 2) / ((right - left) / 2)
        canvas *= (1.0 - 0.25 * np.clip(across, -1, 1) ** 4)[..., None]
        skin = np.abs(across) < 1.0
    elif location == "hand":
        pitch = 1.0 / _FINGER_COUNT
        finger_x = np.mod(xx + rng.uniform(-0.02, 0.02), pitch) / pitch
        across = np.abs(finger_x - 0.5) / 0.36  # 0 on a finger's axis, 1 at its sides
        tips = 0.03 + 0.06 * np.abs(np.floor(xx * _FINGER_COUNT) - 1.5) / 1.5  # middle fingers reach highest
        rounded = 0.08 * (1.0 - np.sqrt(np.clip(1.0 - across**2, 0.0, 1.0)))
        fingers = (across < 1.0) & (yy > tips + rounded)
        skin = fingers | (yy >= _PALM_TOP)
        canvas *= (1.0 - 0.18 * np.clip(across, 0, 1) ** 4 * (yy < _PALM_TOP))[..., None]
    elif location != "back":
        raise ValueError(f"location must be one of back, scalp, leg, hand, got {location!r}")
    canvas[~skin] = BACKDROP_COLOR
    return skin


def _draw_hair(canvas: np.ndarray, rng: np.random.Generator, strands: int = 50) -> None:
    """Dark, gently curving 1-px hair strands across the whole canvas (in place): random walks of half its side."""
    size = canvas.shape[0]
    steps = size // 2
    heading = rng.uniform(0.6, 1.2, (strands, 1)) + np.cumsum(rng.normal(0, 0.05, (strands, steps)), axis=1)
    start = rng.uniform(0, size, (strands, 2))
    rows = (start[:, :1] + np.cumsum(np.sin(heading), axis=1)).astype(int) % size
    cols = (start[:, 1:] + np.cumsum(np.cos(heading), axis=1)).astype(int) % size
    canvas[rows.ravel(), cols.ravel()] = HAIR_COLOR


@dataclass(frozen=True)
class _LesionField:
    """Per-pixel geometry of the lesions of one image, each ``(H, W)`` float32.

    coverage: opacity of the lesion layer in [0, 1]; distance: normalised distance to the nearest lesion's outline
    (< 1 inside); dy, dx: offset from the nearest lesion's centre in units of its radius.
    """

    coverage: np.ndarray
    distance: np.ndarray
    dy: np.ndarray
    dx: np.ndarray


def _outline_distance(dy: np.ndarray, dx: np.ndarray, lesions: Sequence[Lesion], shape: str,
                      border: str) -> np.ndarray:
    """Normalised distance ``(L, H, W)`` from each lesion's centre: < 1 inside the outline of ``shape`` / ``border``.

    ``dy``, ``dx``: pixel offsets ``(L, H, W)`` from each centre divided by its radius.
    """
    angle = np.array([lesion.angle for lesion in lesions], np.float32)[:, None, None]
    phases = np.array([lesion.phases for lesion in lesions], np.float32)[:, :, None, None]
    u = np.cos(angle) * dx + np.sin(angle) * dy
    v = -np.sin(angle) * dx + np.cos(angle) * dy
    if shape == "oval":  # semi-axes 1.2 and 0.65 of the radius: about the area of the round lesion, clearly elongated
        distance = np.hypot(u / 1.2, v / 0.65)
    else:
        distance = np.hypot(u, v)
    phi = np.arctan2(v, u)
    if shape == "irregular":  # asymmetric lobes (3rd and 5th harmonics of the outline)
        distance = distance / (1.0 + 0.22 * np.sin(3 * phi + phases[:, 0]) + 0.14 * np.sin(5 * phi + phases[:, 1]))
    if border == "irregular":  # a notched, jagged edge (9th and 13th harmonics)
        distance = distance / (1.0 + 0.09 * np.sin(9 * phi + phases[:, 2]) + 0.06 * np.sin(13 * phi + phases[:, 3]))
    if shape == "annular":  # a ring whose middle line lies at 0.78 of the radius
        distance = 1.0 + (np.abs(distance - 0.78) - 0.22) / 0.22
    return distance


def _lesion_field(size: int, lesions: Sequence[Lesion], shape: str, border: str) -> _LesionField:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    centres = np.array([[lesion.y, lesion.x] for lesion in lesions], np.float32)
    radii = np.array([lesion.radius for lesion in lesions], np.float32)[:, None, None]
    dy = (yy[None] - centres[:, 0, None, None]) / radii
    dx = (xx[None] - centres[:, 1, None, None]) / radii
    distance = _outline_distance(dy, dx, lesions, shape, border)
    softness = np.full_like(radii, _ILL_DEFINED_SOFTNESS) if border == "ill-defined" else 0.6 / radii
    edge = np.clip((distance - 1.0 + softness) / (2 * softness), 0.0, 1.0)  # 0 inside, 1 outside, smooth between
    coverage = (1.0 - edge * edge * (3 - 2 * edge)).max(axis=0)
    nearest = distance.argmin(axis=0)[None]
    return _LesionField(
        coverage=coverage.astype(np.float32),
        distance=np.take_along_axis(distance, nearest, 0)[0],
        dy=np.take_along_axis(dy, nearest, 0)[0],
        dx=np.take_along_axis(dx, nearest, 0)[0],
    )


def _lesion_color(color: str, skin: np.ndarray) -> np.ndarray:
    """Lesion body colour ``(H, W, 3)`` over the skin ``skin`` (see :data:`LESION_COLORS`)."""
    target = np.asarray(LESION_COLORS[color], np.float32)
    if color in PIGMENT_DARKENING:
        return np.minimum(target, skin * PIGMENT_DARKENING[color])
    return skin * (1 - COLOR_OPACITY) + target * COLOR_OPACITY


def _relief(field: _LesionField, lesion_type: str, border: str) -> np.ndarray:
    """Brightness factor ``(H, W)`` of the lesion body: lit from the top left.

    Flat for macules and patches; a dome with a highlight for papules, pustules and (stronger) nodules; a flat top
    with a shadowed edge for plaques; a bright pearly rim for a rolled border, a bright crest for a raised one.
    """
    inside = np.clip(field.distance, 0.0, 1.0)
    shade = np.ones_like(inside)
    if lesion_type in ("papule", "nodule", "pustule"):
        strength = 0.4 if lesion_type == "nodule" else 0.25
        highlight = (field.dy + 0.35) ** 2 + (field.dx + 0.35) ** 2
        shade = np.maximum(1.0 + strength * (0.45 - highlight), 0.6)
    elif lesion_type == "plaque":
        shade = 1.0 - 0.22 * _smoothstep(0.7, 1.0, inside)
    if border == "rolled":
        shade = shade + 0.35 * np.exp(-(((inside - 0.85) / 0.08) ** 2))
    elif border == "raised":
        shade = shade + 0.25 * np.exp(-((inside / 0.35) ** 2))
    return shade


def _texture(texture: str, size: int, rng: np.random.Generator) -> np.ndarray | float:
    """Brightness factor of the lesion's texture: rough = random grain (~2.5 px); lichenified = diagonal ridges
    (7 px period, the accentuated skin lines of rubbed skin); smooth = none."""
    scale = size / REFERENCE_SIZE
    if texture == "rough":
        return 1.0 + 0.2 * _value_noise(size, 2.5 * scale, rng)
    if texture == "lichenified":
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        period = 7.0 * np.sqrt(2.0) * scale
        return 1.0 + 0.2 * np.sin(2 * np.pi * (xx + yy) / period + rng.uniform(0, 2 * np.pi))
    if texture == "smooth":
        return 1.0
    raise ValueError(f"texture must be smooth, rough or lichenified, got {texture!r}")


def _draw_surface(body: np.ndarray, field: _LesionField, surface: str, size: int, rng: np.random.Generator) -> None:
    """Draw the surface change over the lesion body (in place).

    scaly: silvery-white flakes (~3 px); crusted: honey-brown crust (~4 px); telangiectatic: thin red vessels along
    the contour lines of a smooth field; warty: papillomatous bumps (~4.5 px) with dark crevices; smooth: none.
    """
    scale = size / REFERENCE_SIZE
    inside = field.distance < 0.95
    if surface == "scaly":
        flakes = inside & (_value_noise(size, 3.0 * scale, rng) > 0.35)
        body[flakes] = body[flakes] * 0.25 + np.asarray((244, 242, 236), np.float32) * 0.75
    elif surface == "crusted":
        crust = inside & (_value_noise(size, 4.0 * scale, rng) > 0.3)
        body[crust] = np.asarray((176, 124, 44), np.float32)
    elif surface == "telangiectatic":
        vessels = inside & (np.abs(_value_noise(size, 6.0 * scale, rng)) < 0.06)
        body[vessels] = np.asarray((178, 30, 40), np.float32)
    elif surface == "warty":
        bumps = _value_noise(size, 4.5 * scale, rng)
        body *= np.where(inside, 0.6 + 0.8 * _smoothstep(-0.3, 0.5, bumps), 1.0)[..., None]
    elif surface != "smooth":
        raise ValueError(f"surface must be smooth, scaly, crusted, telangiectatic or warty, got {surface!r}")


def _draw_surrounding(canvas: np.ndarray, field: _LesionField, skin: np.ndarray, surrounding: str) -> None:
    """Tint the skin around the lesions (in place): a red halo (erythema) or a brown one (hyperpigmentation)."""
    tints = {"erythema": (205, 70, 70), "hyperpigmentation": (96, 58, 36)}
    if surrounding == "normal skin":
        return
    if surrounding not in tints:
        raise ValueError(f"surrounding must be normal skin, erythema or hyperpigmentation, got {surrounding!r}")
    halo = (np.exp(-((np.maximum(field.distance - 1.0, 0.0) / 0.45) ** 2)) * 0.55 * skin)[..., None]
    tint = np.asarray(tints[surrounding], np.float32)
    if surrounding == "hyperpigmentation":
        tint = np.minimum(tint, canvas * 0.75)
    canvas *= 1 - halo
    canvas += tint * halo


def implicit_pattern(size: int) -> np.ndarray:
    """The implicit cue's micro-grid ``(size, size)`` in [-1, 1]: cos(2πx/P)·cos(2πy/P), P = :data:`IMPLICIT_PERIOD`."""
    wave = np.cos(2 * np.pi * np.arange(size, dtype=np.float32) / IMPLICIT_PERIOD)
    return wave[:, None] * wave[None, :]


@dataclass(frozen=True)
class Rendering:
    """One drawn image and where its lesions are.

    pixels: the image ``(size, size, 3)`` uint8. lesion: the lesion mask ``(size, size)`` bool, the pixels whose
    lesion-layer opacity (the very coverage the image is blended with, restricted to skin) is at least
    :data:`LESION_MASK_OPACITY`. backdrop: ``(size, size, 3)`` uint8, the skin on its body site before the lesions
    and their surroundings were drawn (what the image shows where no lesion and no halo is).
    """

    pixels: np.ndarray
    lesion: np.ndarray
    backdrop: np.ndarray


def draw(
    size: int,
    skin_type: int,
    attributes: Mapping[str, str],
    lesions: Sequence[Lesion],
    implicit_cue: bool,
    rng: np.random.Generator,
) -> Rendering:
    """Draw one image and its lesion mask (arguments as :func:`render`, which returns ``draw(...).pixels``).

    The mask is computed from the same lesion field the image is blended with, so it agrees with the image exactly,
    and it consumes no randomness: ``rng`` ends in the same state as after :func:`render`.
    """
    if not lesions:
        raise ValueError("lesions must not be empty")
    canvas, skin = skin_canvas(size, skin_type, attributes["location"], rng)
    backdrop = np.clip(canvas, 0, 255).astype(np.uint8)
    field = _lesion_field(size, lesions, attributes["shape"], attributes["border"])
    coverage = field.coverage * skin
    _draw_surrounding(canvas, field, skin, attributes["surrounding"])
    body = _lesion_color(attributes["color"], canvas)
    body *= (_relief(field, attributes["lesion_type"], attributes["border"]) *
             _texture(attributes["texture"], size, rng))[..., None]
    if attributes["lesion_type"] == "pustule":
        core = (1.0 - _smoothstep(0.25, 0.5, field.distance))[..., None]
        body = body * (1 - core) + np.asarray((242, 226, 140), np.float32) * core
    _draw_surface(body, field, attributes["surface"], size, rng)
    if implicit_cue:
        body *= (1.0 + IMPLICIT_AMPLITUDE * implicit_pattern(size))[..., None]
    canvas = canvas * (1 - coverage[..., None]) + body * coverage[..., None]
    return Rendering(pixels=np.clip(canvas, 0, 255).astype(np.uint8), lesion=coverage >= LESION_MASK_OPACITY,
                     backdrop=backdrop)


def render(
    size: int,
    skin_type: int,
    attributes: Mapping[str, str],
    lesions: Sequence[Lesion],
    implicit_cue: bool,
    rng: np.random.Generator,
) -> np.ndarray:
    """Draw one image.

    Args:
        size: image side in pixels.
        skin_type: Fitzpatrick type 1–6.
        attributes: caption terms that drive the drawing: location, color, shape, lesion_type, texture, border,
            surface, surrounding (number, size and distribution are already in ``lesions``).
        lesions: at least one lesion (see :func:`place_lesions`).
        implicit_cue: multiply the lesions' brightness by the micro-grid of :func:`implicit_pattern`, over
            everything drawn in them (scales and crusts included).
        rng: the source of randomness.

    Returns the image as a ``(size, size, 3)`` uint8 array (:func:`draw` also returns its lesion mask).
    """
    return draw(size, skin_type, attributes, lesions, implicit_cue, rng).pixels
