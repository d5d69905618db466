"""The noise tunnel's three combinations as registered methods, each LAM of noisy copies combined."""
from __future__ import annotations

from typing import Sequence

from onnxlam.lam.result import Window
from onnxlam.methods.base import Method, Progress
from onnxlam.methods.lam.method import LamMethod
from onnxlam.methods.noise_tunnel.options import TunnelOptions


class TunnelMethod(LamMethod):
    """LAM through Captum's NoiseTunnel: `samples` noisy copies of the LR input (Gaussian, `stdev`,
    `seed`), each with its own LAM path, combined by `kind` (see `tunnel.py`)."""

    Options = TunnelOptions
    report_names = ("samples", "stdev", "seed")
    fingerprint = Method.fingerprint  # the tunnel's options, beyond LAM's
    command = True

    def __init__(self, kind: str):
        self.name = kind
        self.title = f"Local attribution map, {kind}"
        self.help = f"LAM through the noise tunnel, combined as {kind}."

    def attribute(self, model, image, windows: Sequence[Window], options, progress: Progress | None = None,
                  program=None) -> list:
        from onnxlam.methods.noise_tunnel.tunnel import NoiseTunnel, noise_tunnel

        tunnel = NoiseTunnel(self.name, options.samples, float(options.stdev), options.seed)
        return noise_tunnel(model, image, windows, tunnel, program=program, progress=progress,
                            options=options.lam())

    def extra_facts(self, result) -> list[tuple[str, str]]:
        t = result.noise_tunnel.tunnel
        return [("noise tunnel", f"{t.kind}  samples={t.samples} stdev={t.stdev:g} seed={t.seed}")]



SMOOTHGRAD = TunnelMethod("smoothgrad")
SMOOTHGRAD_SQ = TunnelMethod("smoothgrad_sq")
VARGRAD = TunnelMethod("vargrad")
