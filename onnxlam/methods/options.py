"""The methods a report runs on each (model, image, window) case, and their options, declared once.

`lam` (the default) is the local attribution map (Gu & Dong, CVPR 2021; lam/); `cem` the causal
effect map of the window taken as the region of interest (Hu et al., TPAMI 2025; methods/cem.py,
forward passes only); `smoothgrad`, `smoothgrad_sq` and `vargrad` LAM through the noise tunnel
(Smilkov et al. 2017, Adebayo et al. 2018; methods/noise_tunnel.py); `erf` the effective receptive
field of the window (the gradient of its intensity sum; methods/erf.py) on the case's one image. Each
case folder holds what the method's own command writes (`onnxlam lam`, `onnxlam cem`, `onnxlam lam
--noise-tunnel`, `onnxlam erf MODEL IMAGE --pixel X Y --size S`). The ERF averaged over many images is
`onnxlam erf MODEL IMAGES…`: a report's per-image ERFs are its terms (each normalised to unit mass).

`MethodOptions` declares the methods' report options with `lam.options.option`, as `LamOptions`
declares LAM's: the report's flags (`cli.options._alias`), its TOML keys (`config`) and validation
derive from it. Its defaults are the methods' own API defaults (`noise_tunnel.SAMPLES`, … and
`CemRunner.run`'s; tests/batch/test_report_methods.py holds them equal). They are written out here, not
read from the methods, so that the command line starts without importing onnxruntime.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from onnxlam.core.errors import InputError
from onnxlam.lam.options import _at_least, _non_negative, option, validate_options

LAM = "lam"
CEM = "cem"
ERF = "erf"
TUNNELS = ("smoothgrad", "smoothgrad_sq", "vargrad")  # methods/noise_tunnel.KINDS, checked by a test
METHODS = (LAM, CEM) + TUNNELS + (ERF,)


@dataclass(frozen=True)
class MethodOptions:
    """The report options of the methods beyond LAM (LAM's own are `LamOptions`)."""

    samples: int = option(10, "--samples", "Noise tunnel: noisy copies per case.",
                          check=_at_least(1), types=(int,))
    stdev: float = option(0.1, "--stdev", "Noise tunnel: noise standard deviation in "
                          "[0, 1] units.", check=_non_negative, types=(int, float))
    seed: int = option(0, "--seed", "Noise tunnel: seed of the noise.", types=(int,))
    cem_size: int | None = option(None, "--cem-size", "CEM: ROI side in SR pixels (default: the window's "
                                  "size; the ROI's top-left is the window's).", check=_at_least(1), types=(int,))
    cem_block: int = option(8, "--cem-block", "CEM: block side in output pixels.",
                            check=_at_least(1), types=(int,))
    cem_samples: int = option(3, "--cem-samples", "CEM: coarse interventions per block.",
                              check=_at_least(1), types=(int,))
    cem_refine: int = option(50, "--cem-refine", "CEM: interventions per refined block "
                             "(0: no refinement).", check=_non_negative, types=(int,))
    cem_tol: float = option(0.01, "--cem-tol", "CEM: tolerance in dB (refinement threshold; "
                            "|CE| below it is 0).", check=_non_negative, types=(int, float))
    cem_seed: int = option(0, "--cem-seed", "CEM: seed of the patch bank and the draws.",
                           types=(int,))
    cem_patches: str | None = option(None, "--cem-patches", "CEM: folder of images to cut the patch bank from "
                                     "(default: the bundled photographs).", types=(str,))
    cem_bank_size: int = option(10_000, "--cem-bank-size", "CEM: patches in the bank.",
                                check=_at_least(1), types=(int,))

    def validate(self) -> MethodOptions:
        return validate_options(self)

    def to_json(self) -> dict:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    def tunnel(self, kind: str):
        """The `noise_tunnel.NoiseTunnel` of method `kind` with these options."""
        from onnxlam.methods.noise_tunnel import NoiseTunnel

        return NoiseTunnel(kind, self.samples, float(self.stdev), self.seed)

    def cem_arguments(self) -> dict:
        """Keyword arguments of `CemRunner.run` (the ROI and `crop` are the case's and the report's)."""
        return {"block": self.cem_block, "samples": self.cem_samples, "refine": self.cem_refine,
                "tol": float(self.cem_tol), "seed": self.cem_seed, "patches": self.cem_patches,
                "bank_size": self.cem_bank_size}

    def parameters(self, method: str) -> dict | None:
        """What a case of `method` depends on beyond the LAM options (its fingerprint's "method"); None
        for LAM, whose fingerprint is what it always was."""
        if method == LAM:
            return None
        if method == CEM:
            return {"name": CEM, **self.cem_arguments()}
        if method == ERF:
            return {"name": ERF}
        return {"name": method, "samples": self.samples, "stdev": float(self.stdev), "seed": self.seed}


def parse_methods(values: Iterable[str] | str | None) -> tuple[str, ...]:
    """The methods of `--method` (repeatable, or a comma list) or TOML `methods`/`method`: in order,
    without duplicates; default ("lam",). InputError naming the choices for an unknown name."""
    if values is None:
        return (LAM,)
    items = [values] if isinstance(values, str) else list(values)
    names = []
    for item in items:
        if not isinstance(item, str):
            raise InputError(f"a method is a name ({', '.join(METHODS)}); got {item!r}")
        names += [n.strip().lower() for n in item.split(",") if n.strip()]
    for name in names:
        if name not in METHODS:
            raise InputError(f"unknown method {name!r}; choose one or more of {', '.join(METHODS)} "
                             "(--method lam,cem or --method lam --method cem)")
    if not names:
        raise InputError(f"--method names no method; choose one or more of {', '.join(METHODS)}")
    return tuple(dict.fromkeys(names))


def check_methods(methods: tuple[str, ...], lam_options, method_options: MethodOptions,
                  given: Iterable[str] = ()) -> MethodOptions:
    """InputError for a combination no case could run with, or for options `given` (names) that no
    chosen method takes; the options with the patch folder absolute (a cluster's workers do not run
    in this folder)."""
    from dataclasses import fields

    flags = {f.name: f.metadata["flag"] for f in fields(MethodOptions)}
    for name in given:
        cem = name.startswith("cem_")
        if (CEM not in methods) if cem else not set(TUNNELS) & set(methods):
            raise InputError(f"{flags[name]} belongs to " + ("--method cem" if cem else
                             "the noise tunnel (--method smoothgrad, smoothgrad_sq or vargrad)") +
                             f"; the report runs {', '.join(methods)}: add the method or leave the option out")
    if CEM in methods:
        if lam_options.lr:
            raise InputError("--method cem takes the HR image as its ground truth (the input is its bicubic "
                             "downsampling); --lr does not apply to it: run cem in a report without --lr")
        if lam_options.inputs:
            raise InputError("--method cem does not take --input values (extra model inputs); run cem in a "
                             "report without --input")
    if method_options.cem_patches is not None:
        folder = Path(method_options.cem_patches).expanduser()
        if not folder.is_dir():
            raise InputError(f"--cem-patches {method_options.cem_patches}: not a folder; give a folder of images "
                             "to cut patches from")
        from dataclasses import replace

        method_options = replace(method_options, cem_patches=str(folder.absolute()))
    return method_options
