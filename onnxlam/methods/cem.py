"""Causal effect maps (CEM): which input blocks help, and which hurt, the restoration of an output region.

J. Hu, J. Gu, S. Yu, F. Yu, Z. Li, Z. You, C. Lu, C. Dong, "Interpreting Low-level Vision Models with
Causal Effect Maps", IEEE TPAMI 47(8), 2025 (arXiv 2407.19789); public code J-FHu/CEM. The algorithm,
every default of that code and onnxlam's documented deviations are in docs/CEM-SPEC.md (cited as §N).

For a region of interest (ROI) of side R at column w, row h of the output, and a model F:

    P(y)  = PSNR of Q(y)[h:h+R, w:w+R] against the ground truth I (RGB, float64 MSE, no shave),
            Q(y) = uint8(round(clip(y, 0, 1) · 255))                                        (§1)
    O     = P(F(x)), x the degraded input (SR: bicubic ×1/s; DN: I + N(0, σ))               (§1)
    x_ijk = x with input block (i, j) (b = block // s pixels a side) replaced by a patch
            drawn from a bank (SR: resized by cv2's INTER_CUBIC; DN: noised like x)        (§2)
    C_ijk = P(F(x_ijk)),  k = 1…Nc for every block (the coarse pass)                       (§3)
    block (i, j) is refined iff max_k |O − C_ijk| ≥ tol; it gets Nf new draws F_ijm       (§3)
    μ_ij  = mean_m F_ijm if refined, else mean_k C_ijk (never pooled)                      (§3)
    CE_ij = O − μ_ij dB, set to 0 where |CE_ij| < tol                                      (§4)

CE > 0: replacing the block lowers the ROI's PSNR, so its content helps; CE < 0: it hurts. The
effect range is max CE − min CE (§5); the picture is the paper's seismic map (§6). Only forward
passes are needed, so CEM runs on every model onnxruntime can run, gradient rules or not.

The numpy layer (PSNR, patch resizing, refinement, effects, summary, picture, batch size) is pure
functions; `CemRunner` runs the model: every intervention of a pass goes through onnxruntime in
batches whose size is bounded by `--max-memory` from the measured memory of one forward pass.

Documented deviations from the public code (§ "What onnxlam does differently"): the patch bank is
cut at seeded positions from the user's folder or the bundled photographs; patches are pasted in
RGB; every draw comes from one seeded generator (numpy's legacy `RandomState(seed)`, whose stream
numpy keeps stable: the DN input noise first, as the public code's `seed(0)`, then per intervention
a bank index and, for DN, the patch's noise); non-square inputs get a ceil(H/b) × ceil(W/b) grid;
ROI blocks are excluded from the counts (reported separately) and the ROI box is drawn on the ROI.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from onnxlam.engine.cropping import choose_crop
from onnxlam.core.errors import InputError, NumericalError

TASKS = ("sr", "dn")
PICTURE_BOUND = {"sr": 2.5, "dn": 1.0}  # B of §6, dB
GAMMA = 1.2                               # §6: V = sign(M)·|M|^(1/1.2) / B^(1/1.2)
BANK_SIZE = 10_000                        # the public bank's size (patch-DIV2K-8-Demo)
NOISE_SIGMA = 50.0                        # the DN yml's noise level, in 8-bit grey levels
MAX_BATCH = {"cpu": 16, "cuda": 64}       # interventions per run when memory allows
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


# --- typed results -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Roi:
    """The region of interest: top-left column `x`, row `y`, side `size`, in output pixels."""

    x: int
    y: int
    size: int = 32

    def to_json(self) -> dict:
        return {"x": self.x, "y": self.y, "size": self.size}


@dataclass(frozen=True)
class Draw:
    """One intervention's random content: a bank patch (block×block×C uint8, output pixels) and, for
    denoising, the noise added to it after resizing (b×b×C float64, in [0, 1] units)."""

    patch: np.ndarray
    noise: np.ndarray | None = None


DrawFn = Callable[[str, int, int, int], Draw]  # (pass "coarse"/"fine", row, col, k) → Draw


@dataclass(frozen=True)
class BankInfo:
    """Where the patch bank came from: `source` (a folder, or "bundled"), `size` patches, `seed`."""

    source: str
    size: int
    seed: int
    images: int

    def to_json(self) -> dict:
        return {"source": self.source, "size": self.size, "seed": self.seed, "images": self.images}


@dataclass(frozen=True)
class CemParams:
    """The parameters of one run (§ Notation): block in output px, samples Nc, refine Nf, tol in dB."""

    task: str
    block: int
    samples: int
    refine: int
    tol: float
    seed: int
    noise: float                      # DN noise σ in grey levels (unused for SR)
    bank: BankInfo | None             # None when the draws were supplied

    def to_json(self) -> dict:
        return {"task": self.task, "block": self.block, "samples": self.samples, "refine": self.refine,
                "tol": self.tol, "seed": self.seed, "noise": self.noise,
                "bank": self.bank.to_json() if self.bank else "supplied"}


@dataclass(frozen=True)
class Summary:
    """§5 over the non-ROI blocks; min/max/argmin/argmax over the map with ROI blocks at 0 (as the code)."""

    positive: int
    negative: int
    neutral: int
    roi_blocks: int
    minimum: float
    maximum: float
    argmin: tuple[int, int]
    argmax: tuple[int, int]

    @property
    def effect_range(self) -> float:
        return self.maximum - self.minimum

    def to_json(self) -> dict:
        return {"positive": self.positive, "negative": self.negative, "neutral": self.neutral,
                "roi_blocks": self.roi_blocks, "min": self.minimum, "max": self.maximum,
                "argmin": list(self.argmin), "argmax": list(self.argmax), "range": self.effect_range}


@dataclass(frozen=True)
class CemResult:
    """Everything one CEM run produced; `to_json()` is what `result.json` holds."""

    effect: np.ndarray            # CE, float64 n_h×n_w dB, tol-zeroed; NaN on ROI blocks
    psnr_coarse: np.ndarray       # C, float64 n_h×n_w×Nc
    psnr_fine: np.ndarray         # F, float64 n_h×n_w×Nf; NaN where the block was not refined
    refined: np.ndarray           # bool n_h×n_w
    roi_mask: np.ndarray          # bool n_h×n_w: the ROI's own blocks
    reference_psnr: float         # O
    summary: Summary
    roi: Roi
    params: CemParams
    scale: int
    block_input: int              # b, input pixels
    input_image: np.ndarray       # x, uint8 h×w×C: what the model saw
    truth: np.ndarray             # I, uint8 H×W×C
    model: str
    model_sha256: str
    image: str
    provider: str
    seconds: float
    batch_size: int
    forward_passes: int
    memory: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)
    crop: dict | None = None      # the LR box the interventions ran on (cropping.Crop.to_json), None: all

    @property
    def grid(self) -> tuple[int, int]:
        return tuple(self.effect.shape)

    def picture(self) -> np.ndarray:
        """The §6 picture (uint8 H×W×3)."""
        return cem_picture(self.effect, self.roi_mask, self.roi, self.scale, self.block_input,
                           self.input_image, self.truth.shape[:2], PICTURE_BOUND[self.params.task])

    def to_json(self) -> dict:
        return {"method": "cem", "reference_psnr": self.reference_psnr, "counts": {
                    "positive": self.summary.positive, "negative": self.summary.negative,
                    "neutral": self.summary.neutral, "roi_blocks": self.summary.roi_blocks},
                "effect": {"min": self.summary.minimum, "max": self.summary.maximum,
                           "argmin": list(self.summary.argmin), "argmax": list(self.summary.argmax),
                           "range": self.summary.effect_range, "range_text": f"{self.summary.effect_range:.2f}"},
                "roi": self.roi.to_json(), "grid": list(self.grid), "block_input": self.block_input,
                "refined_blocks": int(self.refined.sum()), "parameters": self.params.to_json(),
                "scale": self.scale, "lr_size": list(self.input_image.shape[:2]),
                "sr_size": list(self.truth.shape[:2]), "model": self.model, "model_sha256": self.model_sha256,
                "image": self.image, "provider": self.provider, "seconds": round(self.seconds, 4),
                "batch_size": self.batch_size, "forward_passes": self.forward_passes,
                "memory": self.memory, "crop": self.crop, "warnings": list(self.warnings)}


# --- pure numpy: metric, patches, the coarse-to-fine statistics, the picture ----------------------------

def quantise(y: np.ndarray) -> np.ndarray:
    """Q(y) = uint8(round(clip(y, 0, 1)·255)) in y's float type, round half to even, as the code's
    `tensor2img` on float32 outputs (§1). Any layout; NaN is the caller's to reject."""
    y = np.asarray(y)
    return np.rint(np.clip(y, 0, 1) * y.dtype.type(255)).astype(np.uint8)


def psnr(output: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """PSNR in dB of uint8 images against `truth` (§1): float64 MSE over every value, inf where MSE = 0.

    `output`: ...×H×W×C uint8 (leading batch dims allowed); `truth`: H×W×C uint8.
    """
    d = output.astype(np.float64) - truth.astype(np.float64)
    mse = (d * d).reshape(d.shape[: d.ndim - 3] + (-1,)).mean(axis=-1)
    with np.errstate(divide="ignore"):
        return 20.0 * np.log10(255.0 / np.sqrt(mse))


def roi_psnr(outputs: np.ndarray, truth_window: np.ndarray, x: int, y: int) -> np.ndarray:
    """P(y) for a batch of model outputs N×C×H×W (float): their R×R window at column x, row y against
    the ground truth's ROI pixels I[h:h+R, w:w+R] (`truth_window`, R×R×C uint8)."""
    r = truth_window.shape[0]
    window = outputs[:, :, y:y + r, x:x + r].transpose(0, 2, 3, 1)
    return psnr(quantise(window), truth_window)


def _cubic_weights(t: np.ndarray) -> np.ndarray:
    """cv2's `interpolateCubic` (A = −0.75) at fractional offsets t: 4 weights per t."""
    a = -0.75
    w0 = ((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a
    w1 = ((a + 2) * t - (a + 3)) * t * t + 1
    w2 = ((a + 2) * (1 - t) - (a + 3)) * (1 - t) * (1 - t) + 1
    return np.stack([w0, w1, w2, 1 - w0 - w1 - w2], axis=-1)


def _cubic_matrix(n_in: int, n_out: int) -> np.ndarray:
    """n_out×n_in matrix of cv2.resize INTER_CUBIC along one axis: half-pixel centres, edge pixels repeated."""
    src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    base = np.floor(src).astype(int)
    weights = _cubic_weights(src - base)
    m = np.zeros((n_out, n_in))
    for k in range(4):
        np.add.at(m, (np.arange(n_out), np.clip(base - 1 + k, 0, n_in - 1)), weights[:, k])
    return m


def resize_cubic(patch: np.ndarray, side: int) -> np.ndarray:
    """A uint8 p×p×C patch resized to side×side as cv2.resize(…, INTER_CUBIC) does (§2, SR).

    In float64 with round half up (cv2 rounds its fixed-point sum that way); for the integer factors
    of the defaults (8 → 2, 8 → 4) the weights are dyadic, so this is cv2's result exactly.
    """
    p = np.asarray(patch)
    if p.shape[0] == side and p.shape[1] == side:
        return p.copy()
    rows, cols = _cubic_matrix(p.shape[0], side), _cubic_matrix(p.shape[1], side)
    v = np.einsum("ij,jkc,lk->ilc", rows, p.astype(np.float64), cols)
    return np.clip(np.floor(v + 0.5), 0, 255).astype(np.uint8)


def add_noise(pixels: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """uint8(clip(p/255 + n, 0, 1)·255), truncating, as the DN code degrades images and patches (§1, §2)."""
    return (np.clip(pixels / 255.0 + noise, 0, 1) * 255).astype(np.uint8)


def intervention_content(draw: Draw, side: int) -> np.ndarray:
    """What one intervention pastes into x: the bank patch resized to b×b, then noised for DN (§2)."""
    content = resize_cubic(draw.patch, side)
    return content if draw.noise is None else add_noise(content, draw.noise)


def paste(x: np.ndarray, content: np.ndarray, top: int, left: int) -> np.ndarray:
    """A copy of x (h×w×C uint8) with `content` placed with its top-left at (top, left); what falls
    outside x is cut off (the last row/column of blocks may be partial, a crop may cut a block)."""
    out = x.copy()
    h, w = content.shape[:2]
    t, l = max(top, 0), max(left, 0)
    b, r = min(top + h, x.shape[0]), min(left + w, x.shape[1])
    if b > t and r > l:
        out[t:b, l:r] = content[t - top:b - top, l - left:r - left]
    return out


def touches(i: int, j: int, side: int, box: tuple[int, int, int, int]) -> bool:
    """Whether input block (i, j) overlaps the LR box (top, left, bottom, right; bottom/right exclusive)."""
    return i * side < box[2] and (i + 1) * side > box[0] and j * side < box[3] and (j + 1) * side > box[1]


def grid_shape(lr_size: tuple[int, int], side: int) -> tuple[int, int]:
    """ceil(h/b) × ceil(w/b) (the code's n×n for square inputs, §1)."""
    return -(-lr_size[0] // side), -(-lr_size[1] // side)


def roi_mask(grid: tuple[int, int], roi: Roi, scale: int, side: int) -> np.ndarray:
    """The ROI's own blocks: rows h // (s·b) … ceil((h+R)/(s·b)) − 1, columns likewise (§4; the code's
    h//8 … (h+R)//8 − 1 for the defaults, where s·b = 8 and the ROI is aligned to blocks)."""
    px = scale * side
    mask = np.zeros(grid, bool)
    mask[roi.y // px:-(-(roi.y + roi.size) // px), roi.x // px:-(-(roi.x + roi.size) // px)] = True
    return mask


def refinement_set(reference: float, coarse: np.ndarray, tol: float) -> np.ndarray:
    """Blocks to refine: max_k |O − C_ijk| ≥ tol (§3.2); `coarse` is n_h×n_w×Nc."""
    return np.max(np.abs(reference - coarse), axis=-1) >= tol


def block_means(coarse: np.ndarray, fine: np.ndarray, refined: np.ndarray) -> np.ndarray:
    """μ: the fine draws' mean where refined, else the coarse draws' (never pooled, §3.3)."""
    mu = coarse.mean(axis=-1)
    if refined.any():
        mu[refined] = fine[refined].mean(axis=-1)
    return mu


def causal_effect(reference: float, mu: np.ndarray, tol: float) -> np.ndarray:
    """CE = O − μ, zeroed where |CE| < tol (§4)."""
    ce = reference - mu
    return np.where(np.abs(ce) < tol, 0.0, ce)


def summarise(ce: np.ndarray, roi: np.ndarray) -> Summary:
    """§5, with onnxlam's deviation: the ROI blocks are counted apart, not as positive.

    Min, max and the first argmin/argmax (row, col, row-major) are over the map with ROI blocks
    set to 0, as the code computes them.
    """
    outside = ce[~roi]
    zeroed = np.where(roi, 0.0, ce)
    amin, amax = np.unravel_index(np.argmin(zeroed), ce.shape), np.unravel_index(np.argmax(zeroed), ce.shape)
    return Summary(positive=int((outside > 0).sum()), negative=int((outside < 0).sum()),
                   neutral=int((outside == 0).sum()), roi_blocks=int(roi.sum()),
                   minimum=float(zeroed.min()), maximum=float(zeroed.max()),
                   argmin=(int(amin[0]), int(amin[1])), argmax=(int(amax[0]), int(amax[1])))


def cem_picture(ce: np.ndarray, roi_blocks: np.ndarray, roi: Roi, scale: int, side: int,
                lr: np.ndarray, size: tuple[int, int], bound: float) -> np.ndarray:
    """The paper's picture (§6) as uint8 H×W×3.

    M = clip(CE, −B, B), ROI blocks := B; V = sign(M)·|M|^(1/1.2) / B^(1/1.2); seismic(V/2 + 1/2)
    per block, nearest ×(s·b); the ROI's pixels pure green; uint8(0.9·map + 0.1·x resized to I's
    size with Pillow's default filter); a 2-px green box on the ROI (the code draws it at s·(w, h)).
    """
    from PIL import Image

    from onnxlam.render import pictures

    m = np.clip(np.where(roi_blocks, bound, np.nan_to_num(ce)), -bound, bound)
    v = np.sign(m) * np.abs(m) ** (1 / GAMMA) / bound ** (1 / GAMMA)
    colours = pictures.seismic(v / 2 + 0.5)
    px = scale * side
    h, w = size
    picture = np.repeat(np.repeat(colours, px, axis=0), px, axis=1)[:h, :w].copy()
    picture[roi.y:roi.y + roi.size, roi.x:roi.x + roi.size] = (0, 255, 0)
    rgb = lr if lr.shape[2] == 3 else np.repeat(lr, 3, axis=2)
    background = np.asarray(Image.fromarray(rgb).resize((w, h)), np.float64)
    blended = (0.9 * picture + 0.1 * background).astype(np.uint8)
    return pictures.draw_window(blended, roi.x, roi.y, roi.size, colour=(0, 255, 0), width=2)


def plan_batch(per_image: float | None, in_use: float | None, budget: float, cap: int) -> int:
    """The most interventions per run (≤ cap) whose predicted memory, what is in use now plus the
    measured per-image forward memory times the batch (with memory.margin), fits the budget; 1 when
    nothing could be measured (the safe choice) or when not even one fits."""
    from onnxlam.engine import memory

    if per_image is None or in_use is None:
        return 1
    fits = [b for b in range(1, cap + 1) if in_use + memory.margin(b * per_image) <= budget]
    return max(fits, default=1)


# --- the patch bank and the seeded draws -------------------------------------------------------------

def bundled_photos() -> list[Path]:
    return sorted((Path(__file__).resolve().parents[1] / "data").glob("*.png"))


def _as_uint8(pixels: np.ndarray) -> np.ndarray:
    """read_image's H×W×C (uint8, uint16 or float in [0, 1]) as uint8: CEM's metric is 8-bit (§1)."""
    if pixels.dtype == np.uint8:
        return pixels
    if pixels.dtype == np.uint16:
        return np.rint(pixels / 257.0).astype(np.uint8)
    return np.rint(np.clip(pixels, 0, 1) * 255.0).astype(np.uint8)


def load_bank_images(folder: str | Path | None, channels: int) -> tuple[list[np.ndarray], str]:
    """The images patches are cut from: every image file in `folder` (sorted by name), else the bundled photos."""
    from onnxlam.lam import image as images

    if folder is None:
        files, source = bundled_photos(), "bundled"
    else:
        folder = Path(folder)
        if not folder.is_dir():
            raise InputError(f"--patches {folder}: not a folder; give a folder of images to cut patches from")
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        source = str(folder)
        if not files:
            raise InputError(f"--patches {folder}: no images (PNG, JPEG, BMP, TIFF, WebP) in the folder")
    return [_as_uint8(images.match_channels(images.read_image(f), channels)) for f in files], source


def cut_bank(sources: Sequence[np.ndarray], size: int, block: int, seed: int) -> np.ndarray:
    """`size` block×block patches at seeded uniform positions: image index, then top, then left, from
    RandomState([seed, 1]) (a stream apart from the draws'). Returns size×block×block×C uint8."""
    usable = [s for s in sources if s.shape[0] >= block and s.shape[1] >= block]
    if not usable:
        raise InputError(f"no patch-bank image is at least {block}×{block} pixels")
    rng = np.random.RandomState([seed, 1])
    which = rng.randint(len(usable), size=size)
    u = rng.random_sample((size, 2))
    bank = np.empty((size, block, block, usable[0].shape[2]), np.uint8)
    for n, (k, (a, b)) in enumerate(zip(which, u)):
        img = usable[k]
        top, left = int(a * (img.shape[0] - block + 1)), int(b * (img.shape[1] - block + 1))
        bank[n] = img[top:top + block, left:left + block]
    return bank


class SeededDraws:
    """The draws of one run from RandomState(seed): the DN input noise first (the public code's
    `np.random.seed(0)`, so seed 0 gives its degraded input), then per intervention, in the order the
    passes ask (coarse: blocks row-major, k inner; then fine likewise), a bank index and for DN the
    patch's noise N(0, σ/255)^(b×b×C)."""

    def __init__(self, bank: np.ndarray, seed: int, sigma: float | None, side: int):
        self.bank, self.sigma, self.side = bank, sigma, side
        self.rng = np.random.RandomState(seed)
        self.indices: list[int] = []

    def input_noise(self, shape: tuple) -> np.ndarray:
        return self.rng.normal(0, self.sigma / 255, shape)

    def __call__(self, phase: str, i: int, j: int, k: int) -> Draw:
        index = int(self.rng.randint(len(self.bank)))
        self.indices.append(index)
        noise = None
        if self.sigma is not None:
            noise = self.rng.normal(0, self.sigma / 255, (self.side, self.side, self.bank.shape[3]))
        return Draw(self.bank[index], noise)


def degrade_dn(truth: np.ndarray, seed: int, sigma: float) -> np.ndarray:
    """The DN input (§1): uint8(clip(I/255 + N(0, σ/255), 0, 1)·255) with RandomState(seed)'s first normals."""
    return add_noise(truth, np.random.RandomState(seed).normal(0, sigma / 255, truth.shape))


# --- running the model ---------------------------------------------------------------------------------

class CemRunner:
    """One model, ready for causal effect maps: `CemRunner("model.onnx").run("photo.png", roi=(x, y))`."""

    def __init__(self, model: str | Path, *, device: str = "auto", max_memory: int | str | None = None,
                 batch_size: int | None = None, value_range: float | None = None, bgr: bool | None = None):
        from onnxlam.engine.analyzer import Analyzer

        if batch_size is not None and batch_size < 1:
            raise InputError(f"--batch-size must be at least 1; got {batch_size}")
        # The Analyzer loads, inspects and normalises the model (and knows its scale and memory budget);
        # CEM needs no gradient program, so ops without a gradient rule are fine.
        self.analyzer = Analyzer(model, device=device, value_range=value_range, bgr=bgr, cache=False,
                                 check_ops=False, max_memory=max_memory)
        self.model_path = str(model)
        self.batch_size = batch_size
        self._session = None
        self._batch: int | None = None
        self._memory: dict = {}
        self._warnings: list[str] = []

    @property
    def scale(self) -> int:
        return self.analyzer.scale

    def session(self):
        if self._session is None:
            from onnxlam.engine.runtime import create_session

            self._session = create_session(self.analyzer.normalised, self.analyzer.device)
        return self._session

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        from onnxlam.graph.model import INPUT, OUTPUT

        try:
            y = self.session().session.run([OUTPUT], {INPUT: batch})[0]
        except Exception as exc:
            raise InputError(f"{self.model_path}: the model failed on a {batch.shape[0]}×{batch.shape[3]}×"
                             f"{batch.shape[2]} input: {str(exc).splitlines()[0][:300]}") from None
        if not np.all(np.isfinite(y)):
            raise NumericalError(f"{self.model_path}: the model's output holds NaN or inf")
        return y

    def reference(self, x: np.ndarray) -> np.ndarray:
        """F(x) at batch 1, measuring what one forward pass needs, which sizes the batch: the growth of
        the resident set (CUDA: device memory in use) during the run, plus the batch's input copies. The
        interventions run on the ROI's crop, no larger than x, so this bounds their need per image."""
        from onnxlam.engine import memory

        a = self.analyzer
        if a.info.fixed_batch not in (None, 1):
            raise InputError(f"{self.model_path} fixes its batch at {a.info.fixed_batch}; CEM needs a batch of 1 "
                             "or a dynamic batch")
        a.budget()  # fixes the limit (and, on CUDA, what was in use before the session)
        device = a.run_device
        self.session()
        if device == "cpu":
            memory.trim()  # what an earlier run freed would otherwise hide what this pass needs
        before = memory.in_use(device)
        with memory.PeakMeter(device) as meter:
            y = self._forward(_to_model(x[None]))
        per_image = None if meter.peak is None or before is None else max(meter.peak - before, 0) + 8 * x.size
        in_use = memory.in_use(device)
        in_use = None if in_use is None else in_use - a.planner.origin
        if self.batch_size is not None:
            self._batch = self.batch_size
        elif a.info.fixed_batch == 1:
            self._batch = 1
        else:
            self._batch = plan_batch(per_image, in_use, a.budget(), MAX_BATCH[device])
        self._warnings = []
        if per_image is not None and in_use is not None and self._batch == 1 and self.batch_size is None \
                and in_use + memory.margin(per_image) > a.budget():
            self._warnings.append(f"one forward pass needs about {memory.format_size(per_image)}, over what the "
                                  f"memory limit {memory.format_size(a.budget())} leaves: interventions run one "
                                  "at a time")
        self._memory = {"device": device, "limit": a.budget(), "per_image": per_image, "in_use": in_use,
                        "counts": "resident set of the process" if device == "cpu"
                        else "device memory held by onnxlam's sessions"}
        return y

    def evaluate(self, scene: "_Scene", contents: list[tuple[int, int, np.ndarray]],
                 progress: Callable[[int], None] | None = None) -> np.ndarray:
        """P(F(x with block (i, j) := content)) for each (i, j, content), in batches, on the scene's crop."""
        t, l, b, r = scene.box
        x = scene.x[t:b, l:r]
        out = np.empty(len(contents))
        n = 0
        while n < len(contents):
            part = contents[n:n + self._batch]
            batch = _to_model(np.stack([paste(x, c, i * scene.side - t, j * scene.side - l) for i, j, c in part]))
            try:
                y = self._forward(batch)
            except InputError:
                if self._batch == 1 or self.batch_size is not None:
                    raise
                self._batch = 1  # the file assumes a batch of 1 somewhere: run one at a time
                continue
            out[n:n + len(part)] = roi_psnr(y, scene.truth_window, *scene.roi_at)
            n += len(part)
            if progress:
                progress(len(part))
        return out

    def _pass(self, scene: "_Scene", blocks, count: int, phase: str, draw: DrawFn, tick) -> np.ndarray:
        """Every intervention of one pass (blocks × count draws, drawn in order), evaluated in batches.

        Draws are taken a chunk at a time (the sequence depends neither on the batch size nor on the
        crop) so that the pasted copies never all sit in memory. A block outside the crop cannot reach
        the ROI: its interventions leave the ROI's output untouched, so their PSNR is O, with no run.
        """
        jobs = [(i, j, k) for i, j in blocks for k in range(count)]
        out = np.full(len(jobs), scene.reference)
        step = max(self._batch * 8, 64)
        for n in range(0, len(jobs), step):
            part = [(m, i, j, draw(phase, i, j, k)) for m, (i, j, k) in enumerate(jobs[n:n + step], n)]
            live = [(m, i, j, d) for m, i, j, d in part if touches(i, j, scene.side, scene.box)]
            if live:
                contents = [(i, j, intervention_content(d, scene.side)) for _, i, j, d in live]
                out[[m for m, *_ in live]] = self.evaluate(scene, contents, tick)
            tick(len(part) - len(live), ran=False)
        return out

    def run(self, image: str | Path | np.ndarray, roi: tuple[int, int] | Roi, size: int = 32, *,
            block: int = 8, samples: int = 3, refine: int = 50, tol: float = 0.01, task: str = "auto",
            patches: str | Path | None = None, bank_size: int = BANK_SIZE, seed: int = 0,
            noise: float = NOISE_SIGMA, draw: DrawFn | None = None,
            crop: bool = True, progress: Callable[[int, int], None] | None = None) -> CemResult:
        """The causal effect map of the ROI at `roi` = (x, y) (output pixels, top-left) of side `size`.

        `draw` supplies the interventions' patches (and DN noise) instead of the seeded bank: called as
        draw(pass, row, col, k) in the order of §3. The DN input noise always comes from RandomState(seed).
        With `crop` (default) a local network runs only on the LR crop the ROI depends on (see
        `cropping.choose_crop`): the same PSNRs to the bit, and blocks outside it need no run at all.
        """
        from onnxlam.lam import image as images

        start = time.perf_counter()
        a = self.analyzer
        s = self.scale
        task = ("sr" if s > 1 else "dn") if task == "auto" else task
        if task not in TASKS:
            raise InputError(f"--task {task!r}: onnxlam computes CEM for sr (super-resolution) and dn "
                             "(denoising); dr needs the public code's OpenCV rain generator, which is not shipped")
        if (task == "sr") != (s > 1):
            raise InputError(f"--task {task} needs a {'super-resolution (scale > 1)' if task == 'sr' else '×1'} "
                             f"model; {self.model_path} has scale {s}")
        r = roi if isinstance(roi, Roi) else Roi(int(roi[0]), int(roi[1]), int(size))
        _check(r, block, samples, refine, tol, bank_size, noise, s)
        side = block // s
        pixels = images.read_image(image) if isinstance(image, (str, Path)) else images.from_array(image)
        pixels = _as_uint8(images.match_channels(pixels, a.info.channels))
        channels = pixels.shape[2]
        if task == "sr":
            lr, _ = a.prepare(pixels)
            x = np.rint(lr.transpose(1, 2, 0) * 255).astype(np.uint8)  # Pillow's uint8 bicubic, back to uint8
            truth = pixels[:x.shape[0] * s, :x.shape[1] * s]
        else:
            a.prepare(pixels, lr=True)  # the size check of fixed-size models
            truth = pixels
            x = degrade_dn(truth, seed, noise)
        H, W = truth.shape[:2]
        if r.x < 0 or r.y < 0 or r.x + r.size > W or r.y + r.size > H:
            raise InputError(f"the ROI ({r.x}, {r.y}) of side {r.size} is not inside the {W}×{H} output; "
                             f"choose X ≤ {W - r.size} and Y ≤ {H - r.size}")
        grid = grid_shape(x.shape[:2], side)
        bank_info = None
        if draw is None:
            sources, source = load_bank_images(patches, channels)
            bank = cut_bank(sources, bank_size, block, seed)
            bank_info = BankInfo(source, bank_size, seed, len(sources))
            draw = SeededDraws(bank, seed, noise if task == "dn" else None, side)
            if task == "dn":
                draw.input_noise(truth.shape)  # the same normals degrade_dn used: the stream continues after them
        y = self.reference(x)
        if y.shape[2:] != (H, W):
            raise InputError(f"{self.model_path}: the output is {y.shape[3]}×{y.shape[2]}, the ground truth "
                             f"{W}×{H}")
        truth_window = truth[r.y:r.y + r.size, r.x:r.x + r.size]
        reference = float(roi_psnr(y, truth_window, r.x, r.y)[0])
        if not math.isfinite(reference):
            raise NumericalError("the ROI's PSNR is infinite: the output equals the ground truth there, so "
                                 "its causal effects are undefined; choose another ROI")
        n_blocks = grid[0] * grid[1]
        total = [n_blocks * samples]
        done, runs = [0], [0]

        def tick(k: int, ran: bool = True) -> None:
            done[0] += k
            runs[0] += k if ran else 0
            if progress:
                progress(done[0], total[0])

        region = None
        if crop and not a.info.fixed_size:  # a local network: run on the ROI's cone only (exact)
            region = choose_crop(a.receptive_field, [(r.x, r.y, r.size)], s, x.shape[:2], worth_it=1.0)
        box = (region.top, region.left, region.bottom, region.right) if region else (0, 0) + x.shape[:2]
        scene = _Scene(x, truth_window, (r.x - box[1] * s, r.y - box[0] * s), box, side, reference)
        blocks = [(i, j) for i in range(grid[0]) for j in range(grid[1])]
        coarse = self._pass(scene, blocks, samples, "coarse", draw, tick).reshape(grid + (samples,))
        refined = refinement_set(reference, coarse, tol) if refine else np.zeros(grid, bool)
        chosen = [(i, j) for i, j in blocks if refined[i, j]]
        total[0] += len(chosen) * refine
        fine = np.full(grid + (refine,), np.nan)
        if chosen:
            values = self._pass(scene, chosen, refine, "fine", draw, tick).reshape(len(chosen), refine)
            for (i, j), v in zip(chosen, values):
                fine[i, j] = v
        for name, values in (("coarse", coarse), ("fine", fine[refined])):
            if np.isinf(values).any():
                raise NumericalError(f"{int(np.isinf(values).sum())} {name} interventions give an infinite ROI PSNR "
                                     "(an exact reconstruction): the mean effect is undefined; choose another ROI")
        mu = block_means(coarse, fine, refined)
        ce = causal_effect(reference, mu, tol)
        mask = roi_mask(grid, r, s, side)
        summary = summarise(ce, mask)
        effect = np.where(mask, np.nan, ce)
        a_info = a.info
        return CemResult(
            effect=effect, psnr_coarse=coarse, psnr_fine=fine, refined=refined, roi_mask=mask,
            reference_psnr=reference, summary=summary, roi=r,
            params=CemParams(task, block, samples, refine, float(tol), int(seed), float(noise), bank_info),
            scale=s, block_input=side, input_image=x, truth=truth, model=self.model_path,
            model_sha256=a_info.sha256, image=str(image) if isinstance(image, (str, Path)) else "<array>",
            provider=self.session().provider, seconds=time.perf_counter() - start, batch_size=self._batch,
            forward_passes=1 + runs[0], memory=dict(self._memory), warnings=list(self._warnings),
            crop=region.to_json() if region else None)


@dataclass(frozen=True)
class _Scene:
    """What every intervention of a run shares: the input, the ROI's truth, where the ROI lies in the
    crop's output (column, row), the crop (LR top, left, bottom, right), b, and O."""

    x: np.ndarray
    truth_window: np.ndarray
    roi_at: tuple[int, int]
    box: tuple[int, int, int, int]
    side: int
    reference: float


def _to_model(batch_hwc: np.ndarray) -> np.ndarray:
    """N×h×w×C uint8 → the model's N×C×h×w float32 in [0, 1] (x/255, §1)."""
    return np.ascontiguousarray(batch_hwc.transpose(0, 3, 1, 2), np.float32) / np.float32(255)


def _check(roi: Roi, block: int, samples: int, refine: int, tol: float, bank_size: int, noise: float,
           scale: int) -> None:
    if roi.size < 1:
        raise InputError(f"--size must be at least 1; got {roi.size}")
    if block < scale:
        raise InputError(f"--block {block} is smaller than the scale {scale}: a block must hold at least one "
                         "input pixel (block // scale ≥ 1)")
    if samples < 1:
        raise InputError(f"--samples must be at least 1; got {samples}")
    if refine < 0:
        raise InputError(f"--refine must be ≥ 0 (0: no refinement); got {refine}")
    if not tol >= 0:
        raise InputError(f"--tol must be ≥ 0 dB; got {tol}")
    if bank_size < 1:
        raise InputError(f"--bank-size must be at least 1; got {bank_size}")
    if not noise >= 0:
        raise InputError(f"--noise must be ≥ 0 grey levels; got {noise}")


def causal_effect_map(model: str | Path, image: str | Path | np.ndarray, roi: tuple[int, int], size: int = 32, *,
                      device: str = "auto", max_memory: int | str | None = None, batch_size: int | None = None,
                      **options) -> CemResult:
    """The causal effect map of `model` for the ROI at `roi` on `image`; see `CemRunner.run` for `options`."""
    return CemRunner(model, device=device, max_memory=max_memory, batch_size=batch_size).run(
        image, roi, size, **options)


# --- writing -------------------------------------------------------------------------------------------

def render(result: CemResult) -> dict[str, np.ndarray]:
    """`cem.png` (§6) and `panel.png`: the ground truth with the ROI box beside it."""
    from onnxlam.render import pictures

    picture = result.picture()
    truth = result.truth if result.truth.shape[2] == 3 else np.repeat(result.truth, 3, axis=2)
    boxed = pictures.draw_window(truth, result.roi.x, result.roi.y, result.roi.size, colour=(0, 255, 0), width=2)
    s = result.summary
    labels = ["image + ROI", f"CEM  +{s.positive} / -{s.negative} / 0 {s.neutral}  range {s.effect_range:.2f} dB"]
    return {"cem.png": picture, "panel.png": pictures.panel([boxed, picture], labels)}


def write_result(result: CemResult, out: str | Path, about: dict | None = None) -> Path:
    """`effect.npy`, `psnr_coarse.npy`, `psnr_fine.npy`, `refined.npy`, `result.json`, `cem.png`,
    `panel.png` into folder `out`, all or nothing.

    `about`: further top-level keys of result.json (a report's "case" and "group"); they may not
    replace the result's own keys."""
    from onnxlam.core.files import atomic_dir
    from onnxlam.render import pictures
    from onnxlam.render.outputs import check_out_dir, write_result_json

    out = Path(out)
    check_out_dir(out)
    with atomic_dir(out) as tmp:
        np.save(tmp / "effect.npy", result.effect)
        np.save(tmp / "psnr_coarse.npy", result.psnr_coarse)
        np.save(tmp / "psnr_fine.npy", result.psnr_fine)
        np.save(tmp / "refined.npy", result.refined)
        for name, picture in render(result).items():
            pictures.save(str(tmp / name), picture)
        write_result_json(tmp / "result.json", result.to_json(), about)
    return out
