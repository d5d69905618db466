"""A toy method registered from outside the package, as a plugin would: the mean of the LR input over
the window's LR footprint, times `gain`. Nothing in onnxlam names it; the registry makes it appear in
the Python API, `onnxlam toy`, `onnxlam report --method toy` and the report's page."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from onnxlam.lam.options import ModelOptions, at_least, option
from onnxlam.lam.result import Window
from onnxlam.methods.base import Column, Method, Provenance, Result, image_name


@dataclass(frozen=True)
class ToyOptions(ModelOptions):
    size: int = option(16, "--size", "Window side in SR pixels.", check=at_least(1), types=(int,))
    gain: float = option(2.0, "--gain", "What the window's mean is multiplied by.", check=at_least(0),
                         types=(int, float))


@dataclass(frozen=True)
class ToyResult(Result):
    method: ClassVar[str] = "toy"

    value: float
    window: Window
    scale: int
    provenance: Provenance
    lr_image: object = field(metadata={"array": True})


class ToyMethod(Method):
    name = "toy"
    title = "Toy mean"
    Options = ToyOptions
    prefix = "toy"
    gradients = False
    path_options = False
    takes_lr = False
    files = ("result.json", "panel.png")
    columns = (Column("value", "toy value", 3, "mean"),)
    help = "The window's mean LR intensity times --gain (a test's plugin)."

    def attribute(self, model, image, windows, options, progress=None):
        x, _ = model.prepare(image)
        s = model.scale
        results = []
        for w in windows:
            patch = x[:, w.y // s:(w.y + w.size) // s, w.x // s:(w.x + w.size) // s]
            results.append(ToyResult(float(options.gain * patch.mean()), w, s,
                                     Provenance(model.model_path, model.info.sha256, image_name(image), "numpy",
                                                0.0, options), x))
        return results

    def write(self, result, out: Path, about=None) -> Path:
        from onnxlam.core.files import atomic_dir, write_result_json
        from onnxlam.render import pictures

        with atomic_dir(Path(out)) as tmp:
            write_result_json(tmp / "result.json", result.to_json(), about)
            pictures.save(str(tmp / "panel.png"), self.picture(result))
        return Path(out)

    def picture(self, result):
        from onnxlam.render import pictures

        return pictures.rgb(result.lr_image)

    def facts(self, result):
        return [("value", f"{result.value:.6f}")] + super().facts(result)


TOY = ToyMethod()


def register() -> None:
    from onnxlam.methods import registry

    if "toy" not in registry.names():
        registry.register(TOY)
