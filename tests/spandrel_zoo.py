"""Small seeded instances of every spandrel (and spandrel_extra_arches) SR / restoration architecture.

One table (``CONFIGS``) shared by ``scripts/architecture_table.py`` (which writes
docs/architectures.md) and ``tests/convert/test_architecture_zoo.py``: each entry names the
architecture class and tiny hyper-parameters, so that every instance runs LAM at LR 16-32 px in
seconds on two CPU cores. ``NOT_APPLICABLE`` lists the registry's architectures that are not a
one-image-in, one-image-out reconstruction network, with the reason.

``build(name)`` constructs the class with seeded random weights (1-D parameters and all-zero
tensors get a small seeded perturbation, so no block starts as the identity), loads its state
dict through spandrel's own architecture detection, and wraps the resulting descriptor's call
(DRUNet's noise-level map, FBCNN's and MPRNet's first output, MixDehazeNet's rescaling) in an
``nn.Module``: the network as spandrel runs it, minus the size padding, which the LR sizes here
make unnecessary (each LR size satisfies the architecture's ``size_requirements``).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field

import torch
import torch.nn as nn

SEED = 1234


@dataclass(frozen=True)
class ZooConfig:
    """One small seeded instance: spandrel architecture id, class ("module:Class"), kwargs, LR side."""

    name: str
    arch: str
    cls: str
    kwargs: dict = field(default_factory=dict)
    lr: int = 16
    fast: tuple = ()  # the exporters this configuration runs with in the fast test suite
    note: str = ""


_SP = "spandrel.architectures"
_EX = "spandrel_extra_arches.architectures"


def _c(name, cls, lr=16, arch=None, fast=(), note="", **kwargs):
    module = _EX if name in {"SRFormer", "M3SNet", "Restormer", "MPRNet", "MIRNet2", "FeMaSR", "AdaCode"} else _SP
    arch = arch or name
    return ZooConfig(name, arch, f"{module}.{arch}:{cls}", kwargs, lr, fast, note)


_TINY_SWIN = dict(img_size=16, embed_dim=12, window_size=4, upscale=4)

CONFIGS: dict[str, ZooConfig] = {c.name: c for c in [
    # --- SR ×4 (×2 where the architecture fixes it) ------------------------------------------
    _c("Compact", "Compact", num_feat=8, num_conv=2, upscale=4),
    _c("SwiftSRGAN", "SwiftSRGAN", num_channels=8, num_blocks=1, upscale_factor=4),
    _c("ESRGAN", "ESRGAN", num_filters=8, num_blocks=1, scale=4),
    _c("RCAN", "RCAN", fast=("torchscript", "dynamo"), scale=4, n_resgroups=1, n_resblocks=2, n_feats=8, reduction=4),
    _c("SwinIR", "SwinIR", fast=("torchscript",), depths=[2], num_heads=[2], upsampler="pixelshuffle", **_TINY_SWIN),
    _c("Swin2SR", "Swin2SR", depths=[2], num_heads=[2], upsampler="pixelshuffle", **_TINY_SWIN),
    _c("HAT", "HAT", depths=(2,), num_heads=(2,), compress_ratio=3, squeeze_factor=2, num_feat=8,
       **_TINY_SWIN),
    _c("DRCT", "DRCT", depths=(1,), num_heads=(2,), upsampler="pixelshuffle", gc=4, **_TINY_SWIN),
    _c("SRFormer", "SRFormer", depths=(1,), num_heads=(2,), upsampler="pixelshuffle", **_TINY_SWIN),
    _c("ATD", "ATD", depths=(2,), num_heads=(2,), category_size=16, num_tokens=8, reducted_dim=4,
       upsampler="pixelshuffle", **_TINY_SWIN),
    _c("GRL", "GRL", img_size=16, embed_dim=12, upscale=4, upsampler="pixelshuffle", depths=[1],
       num_heads_window=[1], num_heads_stripe=[1], window_size=4, stripe_size=[4, 4], mlp_ratio=2.0),
    # embed_dim 64: their dynamic position bias has embed_dim / 32 features (none below 32, and
    # a LayerNorm over one feature is constant)
    _c("DAT", "DAT", img_size=16, embed_dim=64, split_size=[2, 4], depth=[1], num_heads=[2], upscale=4),
    _c("RGT", "RGT", img_size=16, embed_dim=64, depth=[1], num_heads=[2], split_size=[4, 4], upscale=4),
    _c("CRAFT", "CRAFT", window_size=8, embed_dim=64, depths=[1], num_heads=[2], split_size_0=4,
       split_size_1=8, upscale=4),
    _c("FDAT", "FDAT", note="its channel gate's Sigmoid sees inputs of ~1e-5, where the node-local check's "
       "step was float32 rounding and rejected the correct program (5.5e-2) until smooth ops got a floored "
       "tangent (`gradcheck.floored_tangents`)", scale=4, embed_dim=12, num_groups=1, depth_per_group=1, num_heads=2, window_size=4,
       mid_dim=8),
    _c("OmniSR", "OmniSR", num_feat=16, block_num=1, window_size=4, res_num=1, up_scale=4),
    _c("DCTLSA", "DCTLSA", nf=10, num_modules=6, upscale=4, num_head=2),
    _c("DITN", "DITN", dim=12, ITL_blocks=1, SAL_blocks=1, UFONE_blocks=1, patch_size=8, upscale=4),
    _c("SPAN", "SPAN", num_in_ch=3, num_out_ch=3, feature_channels=8, upscale=4),
    _c("SAFMN", "SAFMN", dim=8, n_blocks=1, upscaling_factor=4),
    _c("SAFMNBCIE", "SAFMNBCIE", dim=8, n_blocks=1, num_layers=1, upscaling_factor=2),
    _c("PLKSR", "PLKSR", dim=8, n_blocks=1, kernel_size=7, upscaling_factor=4),
    _c("RealPLKSR", "RealPLKSR", arch="PLKSR", dim=8, n_blocks=1, kernel_size=7, upscaling_factor=4,
       norm_groups=2),
    _c("SeemoRe", "SeemoRe", scale=4, num_experts=2, num_layers=1, embedding_dim=8, global_kernel_size=5,
       recursive=1),
    _c("MoSR", "MoSR", upscale=4, n_block=1, dim=8),
    _c("MoESR", "MoESR", scale=4, dim=8, n_blocks=1, n_block=1, upsample_dim=8),
    _c("MMRealSR", "MMRealSR", num_in_ch=3, num_out_ch=3, scale=4, num_feat=8, num_block=1, num_grow_ch=4,
       num_feats=[8, 8, 8, 8], num_blocks=[1, 1, 1, 1]),
    _c("RealCUGAN", "UpCunet2x", arch="RealCUGAN", lr=32,
       note="alpha (UpCunet's `forward(x, alpha=1)`) is a Python float, baked into the graph at export: "
            "it is not a second ONNX input"),
    _c("IPT", "IPT", lr=24, patch_size=12, n_feats=8, num_heads=2, num_layers=1, scale=[4], rgb_range=1.0),
    # --- restoration ×1 -------------------------------------------------------------------------
    _c("DnCNN", "DnCNN", in_nc=3, out_nc=3, nc=8, nb=4),
    _c("DRUNet", "DRUNet", in_nc=4, out_nc=3, nc=[8, 16, 32, 64], nb=2,
       note="spandrel's call concatenates a 15/255 noise-level map; exported with the map as a second "
            "ONNX input instead, it is held with `--input NAME=VALUE`"),
    _c("FBCNN", "FBCNN", nc=[8, 16, 32, 512], nb=2,
       note="nc[3] = 512: its quality-factor head hard-codes 512 features. spandrel's call lets the net "
            "predict the quality factor; exported with `qf_input` as a second input, it is held with "
            "`--input qf_input=VALUE`"),
    _c("NAFNet", "NAFNet", fast=("torchscript",), width=8, middle_blk_num=1, enc_blk_nums=[1, 1], dec_blk_nums=[1, 1]),
    _c("KBNet", "KBNet_s", width=8, middle_blk_num=1, enc_blk_nums=[1, 1], dec_blk_nums=[1, 1]),
    _c("M3SNet", "M3SNet", width=8, middle_blk_num=1, enc_blk_nums=[1, 1, 1, 1], dec_blk_nums=[1, 1, 1, 1]),
    _c("Restormer", "Restormer", dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1, heads=[1, 1, 1, 1],
       ffn_expansion_factor=1.0),
    _c("MPRNet", "MPRNet", n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4, num_cab=1),
    _c("MIRNet2", "MIRNet2", n_feat=16, chan_factor=1.5, n_MRB=1),
    _c("FFTformer", "FFTformer", lr=32, dim=8, num_blocks=[1, 1, 1], num_refinement_blocks=1,
       ffn_expansion_factor=1),
    _c("SCUNet", "SCUNet", lr=64, config=[1, 1, 1, 1, 1, 1, 1], dim=64),
    _c("Uformer", "Uformer", lr=64, note="LR 64: four ×2 downsamplings down to one 4×4 window (spandrel's "
       "multiple of 128 is for its default window 8)", img_size=256, embed_dim=8, depths=[1] * 9, num_heads=[1] * 9, win_size=4),
    _c("RetinexFormer", "RetinexFormer", n_feat=8, stage=1, num_blocks=[1, 1, 1]),
    _c("HVICIDNet", "HVICIDNet", note="TorchScript exports its hue's boolean-mask assignments as NonZero/"
       "GatherND/ScatterND with a data-dependent Slice, which onnx-ad refused until "
       "`rewrite.masked_assignment_as_where`", channels=[8, 8, 16, 32], heads=[1, 2, 4, 8]),
    _c("MixDehazeNet", "MixDehazeNet", lr=48, embed_dims=[8, 16, 32, 16, 8], depths=[1, 1, 1, 1, 1]),
]}

NOT_APPLICABLE: dict[str, str] = {
    "GFPGAN": "face restoration: aligned 512×512 faces through a StyleGAN decoder, not an SR/restoration map of "
              "an arbitrary image",
    "RestoreFormer": "face restoration (codebook of face parts, 512×512 aligned faces)",
    "CodeFormer": "face restoration (512×512 aligned faces, codebook lookup)",
    "LaMa": "inpainting: two inputs (image, mask); the attribution target is the mask's fill",
    "MAT": "inpainting: two inputs (image, mask)",
    "DDColor": "colourisation: only the luminance of the input reaches the network (resized to its fixed "
               "input_size), and the output is chrominance, not a reconstruction of the input",
    "AuraSR": "a GAN upsampler conditioned on a style latent: its only pretrained model is 600M parameters "
              "with a fixed 64×64 input; no small instance reproduces its call",
    "FeMaSR": "vector-quantised codebook: the nearest-codeword lookup (argmin) has zero gradient almost "
              "everywhere, so LAM's path integral of the gradient is not the attribution of the network",
    "AdaCode": "vector-quantised codebook (as FeMaSR): argmin lookup, zero gradient almost everywhere",
}


class SpandrelCall(nn.Module):
    """The descriptor's own call (``ImageModelDescriptor._call_fn``) as a module, without size padding."""

    def __init__(self, descriptor):
        super().__init__()
        self.model = descriptor.model
        self._call = descriptor._call_fn

    def forward(self, x):
        # a copy: some networks (RCAN: `x *= rgb_range`) write into their input, which autograd
        # forbids on the reference's leaf tensor; the copy is an Identity in the export
        return self._call(self.model, x.clone())


def _class(path: str):
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


def perturb_(module: nn.Module, seed: int = SEED) -> None:
    """Seeded noise on 1-D parameters and all-zero tensors (NAFNet's β/γ, HAT's scales start at zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.dim() <= 1 or not bool(p.any()):
                p.add_(torch.randn(p.shape, generator=g) * 0.05)


# Modules whose eval path writes into a tensor autograd needs (PLKSR's and RealPLKSR's
# `x[:, :idx] = conv(x[:, :idx])`); their training path computes the same function with split and
# concat, so the reference differentiates that one (the export is of the eval path).
AUTOGRAD_TRAINING_PATH = ("PLKConv2d",)


def _split_forward(self, x):
    """PLKConv2d's training forward (the reference calls eval(), so the flag cannot be used)."""
    x1, x2 = torch.split(x, [self.idx, x.size(1) - self.idx], dim=1)
    x1 = self.conv(x1) + x1 if getattr(self, "with_idt", False) else self.conv(x1)
    return torch.cat([x1, x2], dim=1)


def for_autograd(module: nn.Module) -> nn.Module:
    """A copy of `module` the PyTorch reference can differentiate (see AUTOGRAD_TRAINING_PATH)."""
    import copy
    import types

    if not any(type(m).__name__ in AUTOGRAD_TRAINING_PATH for m in module.modules()):
        return module
    clone = copy.deepcopy(module)
    for m in clone.modules():
        if type(m).__name__ in AUTOGRAD_TRAINING_PATH:
            m.forward = types.MethodType(_split_forward, m)
    return clone


def build(name: str, seed: int = SEED):
    """(module, descriptor): the seeded instance ``name`` as spandrel loads and calls it, eval mode."""
    from onnxlam.convert._torchvision import import_spandrel

    spandrel = import_spandrel()
    cfg = CONFIGS[name]
    torch.manual_seed(seed)
    net = _class(cfg.cls)(**cfg.kwargs)
    perturb_(net, seed)
    descriptor = spandrel.ModelLoader().load_from_state_dict(net.state_dict())
    if descriptor.architecture.id != cfg.arch:
        raise RuntimeError(f"spandrel detects {descriptor.architecture.id}, not {cfg.arch}")
    return SpandrelCall(descriptor).eval(), descriptor


def registry_ids() -> list[str]:
    """Every architecture id in spandrel's MAIN_REGISTRY (with spandrel_extra_arches installed)."""
    from onnxlam.convert._torchvision import import_spandrel

    return [a.architecture.id for a in import_spandrel().MAIN_REGISTRY.architectures()]


def lr_image(cfg: ZooConfig, channels: int = 3, seed: int = 0):
    """A smooth seeded LR test image C×lr×lr in [0, 1] (float32 numpy): a crop of the bundled photo."""
    import numpy as np
    from PIL import Image
    from pathlib import Path

    data = Path(__file__).resolve().parents[1] / "onnxlam" / "data" / "astronaut.png"
    img = np.asarray(Image.open(data).convert("RGB"), np.float32) / 255.0
    r, c = 40 + 7 * seed, 90 + 5 * seed
    crop = img[r: r + cfg.lr, c: c + cfg.lr]
    out = np.ascontiguousarray(np.moveaxis(crop, 2, 0))
    return out if channels == 3 else out.mean(axis=0, keepdims=True)


# --------------------------------------------------------------------------- one case of the table
MAP_TOLERANCE = 1e-4  # max |M_onnxlam − M_reference|
DI_TOLERANCE = 0.01   # |DI_onnxlam − DI_reference|
FOLD = 8
EXPORTERS = ("torchscript", "dynamo")


@dataclass
class CaseResult:
    """One architecture × exporter: status is "equal", "differs", "export failed" or "onnxlam error"."""

    name: str
    exporter: str
    status: str
    cause: str = ""
    max_map_diff: float | None = None
    di_diff: float | None = None
    di: float | None = None
    scale: int | None = None
    lr: int | None = None
    parameters: int | None = None
    seconds: float = 0.0

    def to_json(self) -> dict:
        return dict(self.__dict__)


def window_for(sr_side: int) -> tuple[int, int, int]:
    """(x, y, size): a centred window of side 16 (half the SR side for a small ×1 output)."""
    size = min(16, sr_side // 2)
    off = (sr_side - size) // 2
    return off, off, size


def _first_line(exc: BaseException, limit: int = 240) -> str:
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip().splitlines()  # no terminal colours
    line = next((t.strip() for t in text if t.strip()), type(exc).__name__)
    return f"{type(exc).__name__}: {line[:limit]}"


def export_failure(exc: BaseException) -> str:
    """The PyTorch op that stopped an exporter, where its message names one, else its first line."""
    import re

    text = f"{exc}\n{exc.__cause__ or ''}"
    op = re.search(r"(aten::[A-Za-z0-9_.]+|torch\.ops\.[A-Za-z0-9_.]+|<OpOverload\([^)]*\)>"
                   r"|ONNX export of operator [A-Za-z0-9_]+)", text)
    first = _first_line(exc)
    return f"{op.group(1)}: {first}" if op else first


def _export_static_torchscript(model, path, lr: int) -> None:
    import warnings

    dummy = torch.rand(1, 3, lr, lr, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (dummy,), str(path), dynamo=False, input_names=["input"],
                          output_names=["output"], opset_version=17)


class _Float64(nn.Module):
    """`module` run in float64 (a copy), fed and differentiated from a float32 input."""

    def __init__(self, module: nn.Module):
        super().__init__()
        import copy

        self.module = copy.deepcopy(module).double()

    def forward(self, x):
        return self.module(x.double())


def run_case(name: str, exporter: str, workdir, fold: int = FOLD, phase=None) -> CaseResult:
    """Export the seeded instance ``name`` with ``exporter``, run onnxlam's LAM and the independent
    PyTorch LAM (tests/torch_reference.py) on the same module, and compare them.

    ``phase`` (optional) is called with "export", "onnxlam" and "reference" as each starts: what a
    caller running the case in a child process reports when the child dies (a segfault in an
    exporter, say)."""
    phase = phase or (lambda _: None)
    import time
    from pathlib import Path

    import numpy as np

    from tests import architectures
    from tests import torch_reference as ref

    start = time.time()
    cfg = CONFIGS[name]
    model, descriptor = build(name)
    res = CaseResult(name, exporter, "", lr=cfg.lr, scale=descriptor.scale,
                     parameters=sum(p.numel() for p in model.parameters()))
    lr = lr_image(cfg, descriptor.input_channels)
    x, y, size = window_for(cfg.lr * descriptor.scale)
    path = Path(workdir) / f"{name}-{exporter}.onnx"
    phase("export")
    note = ""
    try:
        architectures.export_onnx(model, path, exporter, lr_size=cfg.lr)
    except Exception as exc:  # noqa: BLE001 - any exporter failure is a row of the table
        first = export_failure(exc)
        try:  # what a user does next: TorchScript without dynamic axes (SAFMN's adaptive pooling)
            if exporter != "torchscript":
                raise exc
            _export_static_torchscript(model, path, cfg.lr)
            note = f"exported at a static size (with dynamic axes: {first[:160]}); "
        except Exception:  # noqa: BLE001
            res.status, res.cause = "export failed", first
            res.seconds = time.time() - start
            return res
    import onnxlam

    phase("onnxlam")
    try:
        out = onnxlam.analyze(path, np.ascontiguousarray(np.moveaxis(lr, 0, 2)), window=(x, y), size=size,
                              lr=True, path="blur", fold=fold)
    except Exception as exc:  # noqa: BLE001
        res.status, res.cause = "onnxlam error", note + _first_line(exc, 400)
        res.seconds = time.time() - start
        return res
    phase("reference")
    r = ref.reference_lam(for_autograd(model), lr, x, y, size, "blur", 1.2, fold, 9)
    M = np.asarray(out.attribution, np.float64)
    res.max_map_diff = float(np.abs(M - r["M"]).max())
    res.di_diff = abs(out.di - r["di"])
    res.di = r["di"]
    res.cause = note
    if res.max_map_diff <= MAP_TOLERANCE and res.di_diff <= DI_TOLERANCE:
        res.status = "equal"
        res.seconds = time.time() - start
        return res
    # The float32 reference can itself be off (Real-CUGAN's: 3.6e-4 from the float64 one): judge
    # against the same reference with the module in float64 before calling it a difference.
    phase("reference float64")
    try:
        r64 = ref.reference_lam(_Float64(for_autograd(model)), lr, x, y, size, "blur", 1.2, fold, 9)
    except Exception as exc:  # noqa: BLE001 - a module that cannot run in float64
        r64, why64 = None, _first_line(exc, 120)
    if r64 is not None:
        d32 = float(np.abs(r["M"] - r64["M"]).max())
        d64, di64 = float(np.abs(M - r64["M"]).max()), abs(out.di - r64["di"])
        if d64 <= MAP_TOLERANCE and di64 <= DI_TOLERANCE:
            res.status = "equal"
            res.cause = note + (f"against the float64 reference: max|ΔM| {d64:.1e}, |ΔDI| {di64:.1e} (the float32 "
                         f"reference is {d32:.1e} from the float64 one)")
            res.max_map_diff, res.di_diff, res.di = d64, di64, r64["di"]
            res.seconds = time.time() - start
            return res
        why64 = f"float64 reference: max|ΔM| {d64:.2e}, |ΔDI| {di64:.2e}; float32 vs float64 {d32:.2e}"
    res.status = "differs"
    res.cause = note + (f"max|ΔM| {res.max_map_diff:.2e} (≤ {MAP_TOLERANCE:g}), |ΔDI| {res.di_diff:.2e} "
                 f"(≤ {DI_TOLERANCE:g}); nan gradients: {out.nan_gradients} vs {r['nan_gradients']}; {why64}")
    res.seconds = time.time() - start
    return res
