"""Rendering of the synthetic dermatology images: skin of a Fitzpatrick type on a body-site backdrop, with lesions.

Every visible property is drawn at a scale the tiny default can see at 112 px with 8-px patches: shapes span
several patches, numbers and sizes differ by large factors, textures are patterns of 3–8 px. Pure numpy, one
``(H, W, 3)`` float canvas per image; ``render`` returns a uint8 array.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
    "pink": (232, 128, 140),
    "brown": (118, 68, 38),
    "black": (30, 22, 24),
    "pearly": (240, 222, 218),
    "depigmented": (252, 248, 244),
}
"""Target RGB of each lesion colour (blended over the skin, so darker skin darkens it a little)."""

BACKDROP_COLOR = (58, 66, 84)
"""Cloth / background around the limb, hand or hair."""

SIZE_RADII: dict[str, tuple[float, float]] = {"small": (4.0, 6.0), "medium": (9.0, 13.0), "large": (18.0, 24.0)}
"""Lesion radius range in pixels at 112 px, per size term."""

IMPLICIT_PERIOD = 4.0
"""Period in pixels of the implicit fine texture (a dotted micro-grid no caption field names), aligned with the
pixel grid: half a tiny-default patch, so every patch of a lesion sees the same pattern."""

IMPLICIT_AMPLITUDE = 0.4
"""Relative contrast of the implicit micro-grid."""


@dataclass(frozen=True)
class Lesion:
    """One lesion: centre (y, x) and radius in pixels, orientation in radians, shape harmonics' phases."""

    y: float
    x: float
    radius: float
    angle: float
    phases: tuple[float, float]


def skin_canvas(size: int, skin_type: int, location: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Skin of ``skin_type`` on the backdrop of ``location``.

    Returns the canvas ``(size, size, 3)`` float32 in 0–255 and the skin mask ``(size, size)`` bool.
    """
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    tone = np.asarray(SKIN_TONES[skin_type], np.float32)
    slope = rng.uniform(-0.08, 0.08, 2).astype(np.float32)
    shading = 1.0 + slope[0] * (yy - 0.5) + slope[1] * (xx - 0.5)
    canvas = tone * shading[..., None] * (1.0 + rng.normal(0, 0.015, (size, size, 1)).astype(np.float32))
    skin = np.ones((size, size), bool)
    if location == "leg":
        left, right = 0.18 + rng.uniform(-0.04, 0.04), 0.82 + rng.uniform(-0.04, 0.04)
        skin = (xx > left) & (xx < right)
    elif location == "hand":
        palm = yy > 0.42
        fingers = (yy > 0.04) & (np.mod(xx * 4.0 + 0.25, 1.0) < 0.62) & (xx > 0.06) & (xx < 0.94)
        skin = palm | fingers
    canvas[~skin] = BACKDROP_COLOR
    if location == "scalp":
        _draw_hair(canvas, rng)
    return canvas, skin


def _draw_hair(canvas: np.ndarray, rng: np.random.Generator, strands: int = 40) -> None:
    """Dark curved hair strands across the whole canvas (the scalp backdrop)."""
    size = canvas.shape[0]
    for _ in range(strands):
        y, x = rng.uniform(0, size, 2)
        heading = rng.uniform(0.6, 1.2)
        for _ in range(int(size * 0.5)):
            heading += rng.normal(0, 0.05)
            y, x = y + np.sin(heading), x + np.cos(heading)
            row, col = int(y) % size, int(x) % size
            canvas[row, col] = (34, 26, 22)


def shape_distance(yy: np.ndarray, xx: np.ndarray, lesion: Lesion, shape: str) -> np.ndarray:
    """Normalised distance from the lesion centre: < 1 inside the lesion outline of ``shape``."""
    dy, dx = yy - lesion.y, xx - lesion.x
    cos, sin = np.cos(lesion.angle), np.sin(lesion.angle)
    u, v = cos * dx + sin * dy, -sin * dx + cos * dy
    if shape == "oval":
        return np.hypot(u, v / 0.5) / lesion.radius
    if shape == "linear":
        return np.hypot(u / 1.7, v / 0.28) / lesion.radius
    distance = np.hypot(u, v) / lesion.radius
    if shape == "irregular":
        phi = np.arctan2(v, u)
        outline = 1.0 + 0.22 * np.sin(3 * phi + lesion.phases[0]) + 0.14 * np.sin(5 * phi + lesion.phases[1])
        return distance / outline
    if shape == "annular":  # a ring: inside where the distance is near 0.8 of the radius
        return 1.0 + (np.abs(distance - 0.78) - 0.24) / 0.24
    return distance


def _smoothstep(edge0: float, edge1: float, value: np.ndarray) -> np.ndarray:
    t = np.clip((value - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def lesion_masks(size: int, lesions: list[Lesion], shape: str, border: str) -> tuple[np.ndarray, np.ndarray]:
    """Coverage of the lesions ``(size, size)`` in [0, 1] and the normalised distance to the nearest lesion."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    distance = np.full((size, size), np.inf, np.float32)
    coverage = np.zeros((size, size), np.float32)
    for lesion in lesions:
        d = shape_distance(yy, xx, lesion, shape).astype(np.float32)
        softness = 0.45 if border == "ill-defined" else 0.6 / lesion.radius
        coverage = np.maximum(coverage, 1.0 - _smoothstep(1.0 - softness, 1.0 + softness, d))
        distance = np.minimum(distance, d)
    return coverage, distance


def _smooth_noise(size: int, cell: float, rng: np.random.Generator) -> np.ndarray:
    """Value noise in [-1, 1] with features of about ``cell`` pixels (bilinear upsampling of a coarse grid)."""
    coarse = int(np.ceil(size / cell)) + 2
    grid = rng.uniform(-1, 1, (coarse, coarse)).astype(np.float32)
    position = np.arange(size, dtype=np.float32) / cell
    low = position.astype(int)
    frac = position - low
    rows = grid[low] * (1 - frac)[:, None] + grid[low + 1] * frac[:, None]
    return rows[:, low] * (1 - frac)[None, :] + rows[:, low + 1] * frac[None, :]


def render(
    size: int,
    skin_type: int,
    location: str,
    attributes: dict[str, str],
    lesions: list[Lesion],
    implicit_cue: bool,
    rng: np.random.Generator,
) -> np.ndarray:
    """Draw one image: ``(size, size, 3)`` uint8.

    ``attributes`` holds the caption terms that drive the drawing: color, shape, lesion_type, texture, border,
    surface, surrounding. ``implicit_cue`` adds the fine dotted micro-grid inside the lesions.
    """
    canvas, skin = skin_canvas(size, skin_type, location, rng)
    coverage, distance = lesion_masks(size, lesions, attributes["shape"], attributes["border"])
    coverage *= skin
    _draw_surrounding(canvas, distance, skin, attributes["surrounding"])
    color = np.asarray(LESION_COLORS[attributes["color"]], np.float32)
    lesion_rgb = canvas * 0.15 + color * 0.85
    lesion_rgb *= _relief(distance, attributes["lesion_type"], attributes["border"])[..., None]
    lesion_rgb = _draw_texture(lesion_rgb, attributes["texture"], size, rng)
    if attributes["lesion_type"] == "pustule":
        core = (1.0 - _smoothstep(0.25, 0.5, distance))[..., None]
        lesion_rgb = lesion_rgb * (1 - core) + np.asarray((242, 226, 140), np.float32) * core
    _draw_surface(lesion_rgb, distance, attributes["surface"], size, rng)
    if implicit_cue:  # over everything in the lesion, scales and crusts included
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        grid = np.cos(2 * np.pi * xx / IMPLICIT_PERIOD) * np.cos(2 * np.pi * yy / IMPLICIT_PERIOD)
        lesion_rgb *= (1.0 + IMPLICIT_AMPLITUDE * grid)[..., None]
    canvas = canvas * (1 - coverage[..., None]) + lesion_rgb * coverage[..., None]
    return np.clip(canvas, 0, 255).astype(np.uint8)


def _relief(distance: np.ndarray, lesion_type: str, border: str) -> np.ndarray:
    """Multiplicative shading of the lesion body: domes, flat tops with a rim, rolled borders."""
    inside = np.clip(distance, 0.0, 1.0)
    shade = np.ones_like(distance)
    if lesion_type in ("papule", "nodule", "pustule"):
        strength = 0.45 if lesion_type == "nodule" else 0.25
        shade = 1.0 + strength * (0.5 - inside**2)
    elif lesion_type == "plaque":
        shade = 1.0 - 0.22 * _smoothstep(0.7, 1.0, inside)
    if border == "rolled":
        shade = shade + 0.35 * np.exp(-(((inside - 0.85) / 0.08) ** 2))
    elif border == "raised":
        shade = shade + 0.25 * np.exp(-(((inside - 0.8) / 0.1) ** 2))
    return shade


def _draw_texture(lesion_rgb: np.ndarray, texture: str, size: int, rng: np.random.Generator) -> np.ndarray:
    if texture == "rough":
        return lesion_rgb * (1.0 + 0.2 * _smooth_noise(size, 2.5, rng))[..., None]
    if texture == "lichenified":
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        ridges = np.sin(2 * np.pi * (xx + yy) / (7.0 * np.sqrt(2.0)) + rng.uniform(0, 2 * np.pi))
        return lesion_rgb * (1.0 + 0.2 * ridges)[..., None]
    return lesion_rgb


def _draw_surface(lesion_rgb: np.ndarray, distance: np.ndarray, surface: str, size: int, rng: np.random.Generator) -> None:
    inside = distance < 0.95
    if surface == "scaly":
        flakes = inside & (_smooth_noise(size, 1.5, rng) > 0.45)
        lesion_rgb[flakes] = lesion_rgb[flakes] * 0.25 + np.asarray((244, 242, 236), np.float32) * 0.75
    elif surface == "crusted":
        crust = inside & (_smooth_noise(size, 4.0, rng) > 0.3)
        lesion_rgb[crust] = np.asarray((176, 124, 44), np.float32)
    elif surface == "telangiectatic":
        vessels = inside & (np.abs(_smooth_noise(size, 6.0, rng)) < 0.06)
        lesion_rgb[vessels] = np.asarray((178, 30, 40), np.float32)


def _draw_surrounding(canvas: np.ndarray, distance: np.ndarray, skin: np.ndarray, surrounding: str) -> None:
    tints = {"erythema": (205, 70, 70), "hyperpigmentation": (110, 70, 45)}
    if surrounding not in tints:
        return
    halo = (np.exp(-(np.maximum(distance - 1.0, 0.0) / 0.45) ** 2) * 0.55 * skin)[..., None]
    canvas *= 1 - halo
    canvas += np.asarray(tints[surrounding], np.float32) * halo
