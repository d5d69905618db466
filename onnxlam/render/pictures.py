"""Pictures of Local Attribution Maps (spec §6): pure functions, arrays in, arrays out.

Conventions, shared by every function here:

- Images are NumPy arrays, ``uint8``, shape ``H×W×3`` (RGB), row-major: ``image[row, column]``.
- Maps (LAM ``M``, KDE density) are 2-D float arrays ``h×w``, values in [0, 1].
- Positions are ``(x, y)`` = (column, row) of a top-left corner, in the pixels of the image
  they refer to.
- ``scale`` / ``s`` is the integer super-resolution factor: an ``h×w`` map becomes ``(h·s)×(w·s)``.

The pictures reproduce the authors' demo (``vis_saliency``, ``vis_saliency_kde``) without
matplotlib: the "seismic" colormap is rebuilt here bit for bit, and the weighted Gaussian KDE
is computed as an FFT convolution instead of SciPy's O(N²) double sum.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "seismic",
    "lam_picture",
    "kde_density",
    "kde_picture",
    "to_uint8",
    "upscale_bicubic",
    "blend",
    "draw_window",
    "crop_window",
    "panel",
    "colour_bar",
    "save",
]

# matplotlib's `_seismic_data`: dark blue, blue, white, red, dark red, equally spaced on [0, 1].
_SEISMIC_NODES = ((0.0, 0.0, 0.3), (0.0, 0.0, 1.0), (1.0, 1.0, 1.0), (1.0, 0.0, 0.0), (0.5, 0.0, 0.0))
_LUT_SIZE = 256  # matplotlib's default colormap resolution (rcParams["image.lut"])
_KDE_WEIGHT_FLOOR = 1e-8  # the demo adds this to M so that an all-zero map is still a valid weighting
_WHITE = 255


# --------------------------------------------------------------------------------------------
# Colour map
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _seismic_lut() -> np.ndarray:
    """The 256×3 uint8 table ``(255 · lut).astype(uint8)`` of matplotlib's "seismic".

    The float table follows ``matplotlib.colors._create_lookup_table`` operation for operation
    (a ``LinearSegmentedColormap.from_list`` of the five nodes): entry ``i`` interpolates the
    nodes linearly at ``x = i/255``. The same float operations matter, because the demo then
    *truncates* ``255 · rgb``: a value one ulp below an integer would lose a grey level.
    """
    nodes = np.array(_SEISMIC_NODES, dtype=np.float64)  # 5×3
    n = _LUT_SIZE
    x = np.linspace(0.0, 1.0, len(nodes)) * (n - 1)
    xind = (n - 1) * np.linspace(0.0, 1.0, n)
    ind = np.searchsorted(x, xind)[1:-1]
    distance = (xind[1:-1] - x[ind - 1]) / (x[ind] - x[ind - 1])
    inner = distance[:, None] * (nodes[ind] - nodes[ind - 1]) + nodes[ind - 1]
    lut = np.clip(np.concatenate([nodes[:1], inner, nodes[-1:]]), 0.0, 1.0)
    table = (255 * lut).astype(np.uint8)
    table.setflags(write=False)
    return table


def seismic(values: np.ndarray) -> np.ndarray:
    """Colour ``values`` with matplotlib's "seismic" colormap: ``[...]`` float → ``[..., 3]`` uint8.

    Same result as the demo's ``(255 * plt.get_cmap("seismic")(values)).astype(np.uint8)[..., :3]``:

    - lookup index ``i = floor(256 · v)``, with ``v = 1`` mapped to 255 (matplotlib's rule);
      values below 0 take entry 0 (dark blue), values above 1 take entry 255 (dark red);
    - NaN gives black ``(0, 0, 0)``, matplotlib's "bad" colour (transparent black) without alpha;
    - the colour is ``255 · lut[i]`` truncated to uint8, as the demo does.

    0 is dark blue (0, 0, 76), 0.5 almost white (255, 253, 253: entry 128 lies just past the white
    node), 1 dark red (127, 0, 0). Integer input is taken as the numbers it holds (not as table
    indices, unlike matplotlib).
    """
    v = np.asarray(values)
    if not np.issubdtype(v.dtype, np.floating):
        v = v.astype(np.float64)
    # Scaling by 256 is exact in binary floating point, so flooring it is the same in any dtype.
    scaled = v * _LUT_SIZE
    bad = np.isnan(scaled)
    index = np.clip(np.where(bad, 0, scaled), 0, _LUT_SIZE - 1).astype(np.intp)
    rgb = np.array(_seismic_lut()[index])  # a scalar index would give a view of the read-only table
    rgb[bad] = 0
    return rgb


# matplotlib's "viridis" (perceptually uniform, dark purple to yellow) as 256 uint8 RGB entries,
# (255 · lut).astype(uint8) of its float table: for scalar fields (DI heat maps), where the lowest
# value must not look like the white background.
_VIRIDIS_HEX = (
    "44015444025544035745055845065a45085b46095c460b5e460c5f460e61470f62471163471265471466471567471669"
    "47186a48196b481a6c481c6e481d6f481e70482071482172482273482374472575472676472777472878472a79472b7a"
    "472c7b462d7c462f7c46307d46317e45327f45347f453580453681443781443982433a83433b83433c84423d84423e85"
    "4240854141864142864043874044873f45873f47883e48883e49893d4a893d4b893d4c893c4d8a3c4e8a3b508a3b518a"
    "3a528b3a538b39548b39558b38568b38578c37588c37598c365a8c365b8c355c8c355d8c345e8d345f8d33608d33618d"
    "32628d32638d31648d31658d31668d30678d30688d2f698d2f6a8d2e6b8e2e6c8e2e6d8e2d6e8e2d6f8e2c708e2c718e"
    "2c728e2b738e2b748e2a758e2a768e2a778e29788e29798e287a8e287a8e287b8e277c8e277d8e277e8e267f8e26808e"
    "26818e25828e25838d24848d24858d24868d23878d23888d23898d22898d228a8d228b8d218c8d218d8c218e8c208f8c"
    "20908c20918c1f928c1f938b1f948b1f958b1f968b1e978a1e988a1e998a1e998a1e9a891e9b891e9c891e9d881e9e88"
    "1e9f881ea0871fa1871fa2861fa38620a48520a58521a68521a78422a78423a88323a98224aa8225ab8126ac8127ad80"
    "28ae7f29af7f2ab07e2bb17d2cb17d2eb27c2fb37b30b47a32b57a33b67935b77836b87738b97639b9763bba753dbb74"
    "3ebc7340bd7242be7144be7045bf6f47c06e49c16d4bc26c4dc26b4fc36951c46853c56755c66657c66559c7645bc862"
    "5ec96160c96062ca5f64cb5d67cc5c69cc5b6bcd596dce5870ce5672cf5574d05477d05279d1517cd24f7ed24e81d34c"
    "83d34b86d44988d5478bd5468dd64490d64392d74195d73f97d83e9ad83c9dd93a9fd938a2da37a5da35a7db33aadb32"
    "addc30afdc2eb2dd2cb5dd2bb7dd29bade27bdde26bfdf24c2df22c5df21c7e01fcae01ecde01dcfe11cd2e11bd4e11a"
    "d7e219dae218dce218dfe318e1e318e4e318e7e419e9e419ece41aeee51bf1e51cf3e51ef6e61ff8e621fae622fde724"
)


@functools.lru_cache(maxsize=1)
def _viridis_lut() -> np.ndarray:
    table = np.frombuffer(bytes.fromhex("".join(_VIRIDIS_HEX)), np.uint8).reshape(_LUT_SIZE, 3)
    return table


def viridis(values: np.ndarray) -> np.ndarray:
    """Colour ``values`` in [0, 1] with matplotlib's "viridis": ``[...]`` float → ``[..., 3]`` uint8,
    by the same lookup rule as `seismic` (index floor(256 · v), clipped; NaN gives black)."""
    v = np.asarray(values, np.float64) * _LUT_SIZE
    bad = np.isnan(v)
    rgb = np.array(_viridis_lut()[np.clip(np.where(bad, 0, v), 0, _LUT_SIZE - 1).astype(np.intp)])
    rgb[bad] = 0
    return rgb


def hatch(image: np.ndarray, where: np.ndarray, period: int = 6) -> np.ndarray:
    """``image`` (H×W×3 uint8) greyed where ``where`` (H×W bool) holds, with dark diagonal lines every
    ``period`` pixels there: marks the part of a picture no value covers."""
    out = image.copy()
    rows, cols = np.indices(where.shape)
    grey = (0.35 * out[where].astype(np.float64) + 0.65 * 200).astype(np.uint8)
    out[where] = grey
    out[where & ((rows + cols) % period == 0)] = 60
    return out


# --------------------------------------------------------------------------------------------
# LAM and KDE pictures
# --------------------------------------------------------------------------------------------


def _check_map(m: np.ndarray) -> np.ndarray:
    """``m`` as a 2-D floating array (its own float dtype kept); ValueError if it is not one."""
    a = np.asarray(m)
    if a.ndim != 2 or a.size == 0:
        raise ValueError(f"a map must be a non-empty 2-D array, got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise ValueError("the map contains NaN or infinity")
    return a


def _check_scale(scale: int) -> int:
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    return int(scale)


def _resize(image: np.ndarray, scale: int, resample: Image.Resampling) -> np.ndarray:
    """``image`` (H×W×3 uint8) resized to ``(H·scale)×(W·scale)`` by Pillow with ``resample``."""
    h, w = image.shape[:2]
    pil = Image.fromarray(image).resize((w * scale, h * scale), resample)
    return np.asarray(pil, dtype=np.uint8).copy()


LEGIBLE_SIDE = 256  # pictures smaller than this are enlarged so that their captions fit


def enlarge(image: np.ndarray, min_side: int = LEGIBLE_SIDE) -> tuple[np.ndarray, int]:
    """``image`` enlarged by the smallest integer factor (nearest neighbour) that makes its shorter
    side at least ``min_side``, and that factor (1: unchanged)."""
    zoom = max(1, -(-min_side // min(image.shape[:2])))
    return (_resize(image, zoom, Image.Resampling.NEAREST) if zoom > 1 else image), zoom


def lam_picture(m: np.ndarray, scale: int) -> np.ndarray:
    """The LAM picture: ``seismic(M·0.5 + 0.5)``, upscaled ×``scale`` with nearest neighbour.

    ``m``: the abs-normalised map ``M`` (h×w, values in [0, 1]); returns (h·s)×(w·s)×3 uint8.
    0 is (almost) white, 1 dark red. ``M·0.5 + 0.5`` is computed in ``m``'s own float dtype, as the demo's
    ``vis_saliency`` does (a float32 map is coloured from float32 values).
    """
    a = _check_map(m)
    return _resize(seismic(a * 0.5 + 0.5), _check_scale(scale), Image.Resampling.NEAREST)


def _kde_bandwidth(weights: np.ndarray, h: int, w: int) -> np.ndarray:
    """Lower Cholesky factor ``L`` of ``gaussian_kde``'s kernel covariance for pixel data.

    The data are the pixel coordinates ``(x, y)`` = (column, row) with normalised ``weights``
    (row-major). As in SciPy: ``n_eff = 1 / Σ w²``, Scott's factor ``f = n_eff^(−1/(d+4))`` with
    d = 2, covariance ``Σ = cov(data, aweights=w) · f²`` (unbiased weighted covariance).

    A map with one row or one column has zero variance along that axis, which makes Σ singular
    (SciPy raises LinAlgError). Every offset along that axis is then 0, so its variance never
    enters the estimate; it is set to 1 to keep the Cholesky factor defined. The result is the
    limit of SciPy's estimate as that variance goes to 0 (a 1-D KDE along the line, Scott's
    factor still taken with d = 2).
    """
    y, x = np.mgrid[0:h, 0:w]
    data = np.vstack([x.ravel(), y.ravel()])
    n_eff = 1.0 / np.dot(weights, weights)
    factor = n_eff ** (-1.0 / (2 + 4))
    cov = np.atleast_2d(np.cov(data, rowvar=True, bias=False, aweights=weights))
    for axis, extent in enumerate((w, h)):
        if extent == 1:  # every point has the same coordinate on this axis
            cov[axis, :] = cov[:, axis] = 0.0
            cov[axis, axis] = 1.0
    return np.linalg.cholesky(cov) * factor  # lower-triangular L, Σ = L Lᵀ


def _gaussian_on_offsets(chol: np.ndarray, h: int, w: int) -> np.ndarray:
    """``exp(−½ δᵀ Σ⁻¹ δ)`` for every integer offset δ = (dx, dy), |dx| < w, |dy| < h.

    Returned as a (2h−1)×(2w−1) array indexed ``[dy + h − 1, dx + w − 1]``. ``Σ = L Lᵀ`` with
    ``L = chol``; the quadratic form is ``|L⁻¹ δ|²``, whitened as SciPy does, which keeps the
    off-diagonal (x, y) correlation and stays accurate for ill-conditioned Σ.
    The normalising constant ``1 / (2π √det Σ)`` is left out: the density is divided by its max.
    """
    dy, dx = np.mgrid[-(h - 1) : h, -(w - 1) : w]
    offsets = np.vstack([dx.ravel(), dy.ravel()]).astype(np.float64)
    white = np.linalg.solve(chol, offsets)  # L⁻¹ δ (2×2: a triangular solve needs no SciPy)
    quad = np.einsum("ij,ij->j", white, white)
    return np.exp(-0.5 * quad).reshape(dy.shape)


def _convolve_same(a: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """``scipy.signal.fftconvolve(a, kernel, mode="same")`` with NumPy's FFT: the full linear
    convolution, cropped to a's shape around the kernel's centre. (SciPy's signal module costs about
    a second of import time in every process that writes a picture.)"""
    full = [n + k - 1 for n, k in zip(a.shape, kernel.shape)]
    z = np.fft.irfft2(np.fft.rfft2(a, full) * np.fft.rfft2(kernel, full), full)
    top, left = (kernel.shape[0] - 1) // 2, (kernel.shape[1] - 1) // 2
    return z[top:top + a.shape[0], left:left + a.shape[1]]


def kde_density(m: np.ndarray) -> np.ndarray:
    """Weighted Gaussian KDE of the map over its own pixel grid, divided by its max (h×w float64).

    Equal to the demo's ``vis_saliency_kde`` density::

        y, x = np.mgrid[0:h, 0:w]
        pixels = np.vstack([x.ravel(), y.ravel()])          # (column, row) coordinates
        kde = scipy.stats.gaussian_kde(pixels, weights=m.ravel() + 1e-8)
        z = kde(pixels).reshape(h, w); z / z.max()

    computed exactly but fast: evaluating the KDE at the data grid itself is the 2-D convolution
    ``Z = W ⊛ G`` of the normalised weight image W with the kernel Gaussian G of covariance
    ``kde.covariance`` sampled at every integer offset (−(h−1)…h−1 rows, −(w−1)…w−1 columns),
    done with FFTs (``_convolve_same``) in O(N log N) instead of SciPy's O(N²) sum.

    Accuracy: the FFT rounding error is absolute, about 1e-15 of the max, so values agree with
    SciPy to ~1e-12 relative or better except where the density itself is below ~1e-6 of its
    max (there the agreement is ~1e-15 absolute). Tiny negative FFT residues are clipped to 0.

    ``m`` must be finite and non-negative. ``+1e-8`` is added in ``m``'s own float dtype, as the
    demo does. A 1×1 map gives ``[[1.0]]``; one-row or one-column maps, for which SciPy fails with
    a singular covariance, get the 1-D limit described in ``_kde_bandwidth``.
    """
    a = _check_map(m)
    if (a < 0).any():
        raise ValueError("the map must be non-negative (it weights a density)")
    h, w = a.shape
    if a.size == 1:
        return np.ones((1, 1))
    weights = (a.ravel() + _KDE_WEIGHT_FLOOR).astype(np.float64)
    weights /= np.sum(weights)
    kernel = _gaussian_on_offsets(_kde_bandwidth(weights, h, w), h, w)
    # 'same' keeps the h×w block whose centre offset is 0: Z[p] = Σ_q W[q] G[p − q].
    z = _convolve_same(weights.reshape(h, w), kernel)
    z = np.maximum(z, 0.0)
    return z / z.max()


def kde_picture(m: np.ndarray, scale: int) -> np.ndarray:
    """The KDE picture: ``seismic(Z·0.5 + 0.5)`` with ``Z = kde_density(m)``, upscaled ×``scale``
    bicubically (Pillow BICUBIC on the RGB image). Returns (h·s)×(w·s)×3 uint8.

    Same pixels as the demo's ``vis_saliency_kde`` (which resizes an RGBA image whose alpha is
    all 255; Pillow's premultiplied-alpha resize then gives the same RGB).
    """
    z = kde_density(m)
    return _resize(seismic(z * 0.5 + 0.5), _check_scale(scale), Image.Resampling.BICUBIC)


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------


def to_uint8(image: np.ndarray) -> np.ndarray:
    """A float image in [0, 1] as uint8: ``clip(round(255·x), 0, 255)``, round half to even.

    uint8 input is returned unchanged (as a copy). Raises ValueError for NaN/inf or other dtypes.
    """
    a = np.asarray(image)
    if a.dtype == np.uint8:
        return a.copy()
    if not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"expected a float image in [0, 1] or uint8, got dtype {a.dtype}")
    if not np.isfinite(a).all():
        raise ValueError("the image contains NaN or infinity")
    return np.clip(np.rint(a.astype(np.float64) * 255), 0, 255).astype(np.uint8)


def rgb(image_chw: np.ndarray) -> np.ndarray:
    """C×H×W float in [0, 1] (C = 1 or 3) → H×W×3 uint8, clipped: a model's image as a picture."""
    a = np.clip(np.asarray(image_chw, np.float32), 0.0, 1.0).transpose(1, 2, 0)
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    return to_uint8(a)


def _check_rgb(image: np.ndarray, what: str = "image") -> np.ndarray:
    a = np.asarray(image)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3 or a.size == 0:
        raise ValueError(f"{what} must be a non-empty H×W×3 uint8 array, got {a.dtype} {a.shape}")
    return a


def upscale_bicubic(lr: np.ndarray, scale: int) -> np.ndarray:
    """The LR image enlarged ×``scale`` with Pillow's BICUBIC: h×w×3 → (h·s)×(w·s)×3 uint8.

    ``lr`` is float in [0, 1] (converted with ``to_uint8`` first, as the demo resizes a PIL
    image) or uint8. This is the background of the spec's blends.
    """
    return _resize(_check_rgb(to_uint8(lr), "lr"), _check_scale(scale), Image.Resampling.BICUBIC)


def blend(picture: np.ndarray, background: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """``picture·(1 − α) + background·α`` as uint8 (spec §6 blends, α = 0.5 in the paper).

    Rounded half to even (``np.rint``) and clipped to [0, 255]. The demo instead truncates
    (``.astype(np.uint8)``), so its pixels can be one grey level lower where the sum is not an
    integer. Both arrays must have the same shape.
    """
    p, b = np.asarray(picture), np.asarray(background)
    if p.shape != b.shape:
        raise ValueError(f"picture {p.shape} and background {b.shape} differ in shape")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    mixed = p.astype(np.float64) * (1.0 - alpha) + b.astype(np.float64) * alpha
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


def _default_line_width(h: int, w: int) -> int:
    """About 2 px on a 256-px image, growing with the image so the square stays visible."""
    return max(1, round(max(h, w) / 128))


def draw_window(
    image: np.ndarray,
    x: int,
    y: int,
    size: int,
    colour: tuple[int, int, int] = (255, 0, 0),
    width: int | None = None,
) -> np.ndarray:
    """A copy of ``image`` with the window outlined: Pillow ``rectangle((x, y, x+size, y+size))``.

    ``(x, y)`` is the top-left (column, row) and ``size`` the side, in ``image``'s pixels. As in
    the demo the box's far corner is ``x + size``, one pixel past the window, so the outline
    surrounds the window's pixels. The box is clipped to the image first (keeping every side
    visible even at the border); Pillow draws a width-``width`` line inside the box.
    ``width=None`` picks ``max(1, round(max(H, W)/128))`` pixels. ValueError if the window
    misses the image.
    """
    a = _check_rgb(image)
    h, w = a.shape[:2]
    if size < 1 or x >= w or y >= h or x + size <= 0 or y + size <= 0:
        raise ValueError(f"window ({x}, {y}) of side {size} lies outside the {w}×{h} image")
    line = _default_line_width(h, w) if width is None else int(width)
    if line < 1:
        raise ValueError(f"width must be at least 1, got {width}")
    box = (max(x, 0), max(y, 0), min(x + size, w - 1), min(y + size, h - 1))
    pil = Image.fromarray(a)
    ImageDraw.Draw(pil).rectangle(box, outline=tuple(int(c) for c in colour), width=line)
    return np.asarray(pil, dtype=np.uint8).copy()


def crop_window(image: np.ndarray, x: int, y: int, size: int, zoom: int | None = None) -> np.ndarray:
    """The window's pixels ``image[y:y+size, x:x+size]``, enlarged to ``zoom×zoom`` if given.

    ``zoom`` is the side in pixels of the returned square (e.g. the height of the other images of
    a comparison figure); enlargement uses nearest neighbour (Pillow NEAREST) so the SR pixels
    stay visible as blocks. ``None`` returns the crop as is. ValueError unless the window lies
    inside the image.
    """
    a = _check_rgb(image)
    h, w = a.shape[:2]
    if size < 1 or x < 0 or y < 0 or x + size > w or y + size > h:
        raise ValueError(f"window ({x}, {y}) of side {size} is not inside the {w}×{h} image")
    crop = a[y : y + size, x : x + size].copy()
    if zoom is None:
        return crop
    if zoom < 1:
        raise ValueError(f"zoom must be a positive number of pixels, got {zoom}")
    pil = Image.fromarray(crop).resize((int(zoom), int(zoom)), Image.Resampling.NEAREST)
    return np.asarray(pil, dtype=np.uint8).copy()


def _text_size(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont) -> tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - left, bottom - top


def panel(images: Sequence[np.ndarray], labels: Sequence[str] | None = None, gap: int = 4) -> np.ndarray:
    """The images side by side in one row on white, with optional labels underneath (uint8).

    Images are top-aligned with ``gap`` white columns between them; shorter ones are padded with
    white below. With ``labels`` (one per image) a white strip under the row holds each label,
    centred under its image, in black with Pillow's default font. ``labels=None`` adds no strip.
    Output height is ``max(H_i)`` (+ the strip), width ``Σ W_i + gap·(n − 1)``.
    """
    arrays = [_check_rgb(im, f"images[{i}]") for i, im in enumerate(images)]
    if not arrays:
        raise ValueError("panel needs at least one image")
    if labels is not None and len(labels) != len(arrays):
        raise ValueError(f"{len(labels)} labels for {len(arrays)} images")
    if gap < 0:
        raise ValueError(f"gap must be non-negative, got {gap}")
    row_h = max(a.shape[0] for a in arrays)
    total_w = sum(a.shape[1] for a in arrays) + gap * (len(arrays) - 1)
    font = ImageFont.load_default()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    strip_h, lines = 0, []
    if labels is not None:
        lines = [_wrap_label(measure, str(t), font, a.shape[1]) for t, a in zip(labels, arrays)]
        text_h = max(_text_size(measure, line, font)[1] for ls in lines for line in ls) + 2
        strip_h = text_h * max(len(ls) for ls in lines) + 2 * gap + 2  # a little air above and below
    canvas = Image.new("RGB", (total_w, row_h + strip_h), (_WHITE, _WHITE, _WHITE))
    draw = ImageDraw.Draw(canvas)
    left = 0
    for i, a in enumerate(arrays):
        canvas.paste(Image.fromarray(a), (left, 0))
        for k, line in enumerate(lines[i] if labels is not None else []):
            tw, _ = _text_size(draw, line, font)
            tx = left + max((a.shape[1] - tw) // 2, 0)
            draw.text((tx, row_h + gap + 2 + k * text_h), line, fill=(0, 0, 0), font=font)
        left += a.shape[1] + gap
    return np.asarray(canvas, dtype=np.uint8).copy()


def _wrap_label(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> list[str]:
    """`text` in lines no wider than `width` where its words allow (a longer word keeps a line of its
    own), so that a caption never runs into its neighbour's."""
    if _text_size(draw, text, font)[0] <= width:
        return [text]
    lines: list[str] = []
    for word in text.split():
        if lines and _text_size(draw, f"{lines[-1]} {word}", font)[0] <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines or [text]


def colour_bar(colours: np.ndarray, ticks: Sequence[tuple[float, str]], width: int = 14) -> np.ndarray:
    """A vertical colour bar on white: ``colours`` (H×3 uint8, top row first) as a bar ``width`` px
    wide, and right of it a 4-px tick and a black label (Pillow's default font) for each
    ``(t, text)`` of ``ticks``, at the fraction ``t`` ∈ [0, 1] of the bar's height measured from
    its bottom row (t = 0) to its top row (t = 1). Returns H×(width + 6 + widest label + 2)×3."""
    column = _check_rgb(np.asarray(colours)[:, None, :], "colours")[:, 0]
    height = column.shape[0]
    font = ImageFont.load_default()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_w = max((_text_size(measure, text, font)[0] for _, text in ticks), default=0)
    canvas = Image.new("RGB", (width + 6 + text_w + 2, height), (_WHITE, _WHITE, _WHITE))
    canvas.paste(Image.fromarray(np.repeat(column[:, None, :], width, axis=1)), (0, 0))
    draw = ImageDraw.Draw(canvas)
    for t, text in ticks:
        row = int(round((1.0 - float(t)) * (height - 1)))
        draw.line([(width, row), (width + 3, row)], fill=(0, 0, 0))
        _, th = _text_size(draw, text, font)
        top = min(max(row - th // 2 - 1, 0), max(height - th - 2, 0))  # the label stays inside the bar's height
        draw.text((width + 6, top), text, fill=(0, 0, 0), font=font)
    return np.asarray(canvas, dtype=np.uint8).copy()


def _checked_picture(array: np.ndarray) -> np.ndarray:
    a = np.asarray(array)
    if a.dtype != np.uint8 or a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise ValueError(f"a picture is an H×W, H×W×3 or H×W×4 uint8 array, got {a.dtype} {a.shape}")
    return a


def save(path: str, array: np.ndarray) -> None:
    """Write a uint8 image (H×W×3, or H×W grey) with Pillow; the format follows the extension."""
    Image.fromarray(_checked_picture(array)).save(path)


def png_bytes(array: np.ndarray) -> bytes:
    """A uint8 picture as PNG file bytes (a notebook's `_repr_png_`)."""
    import io

    buffer = io.BytesIO()
    Image.fromarray(_checked_picture(array)).save(buffer, format="PNG")
    return buffer.getvalue()
