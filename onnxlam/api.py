"""The Python API: every registered method through one call, on a model opened once.

    >>> import onnxlam
    >>> onnxlam.method_names()
    ('lam', 'cem', 'smoothgrad', 'smoothgrad_sq', 'vargrad', 'erf', 'video', 'faithfulness', 'sanity')
    >>> r = onnxlam.attribute("model.onnx", "photo.png", method="lam", window=(120, 72), size=16, fold=50)
    >>> model = onnxlam.Model("model.onnx")          # or a collection name; opened once, reused
    >>> r = onnxlam.attribute(model, "photo.png", method="cem", window=(40, 40), size=32, block=8)
    >>> r.to_json(), r.save("out/")                  # the CLI's result.json and folder

Options are the command line's flags with underscores (`--bank-size` is `bank_size`); an unknown one,
or a bad value, raises `InputError` naming it. `window` is one (x, y) or a list of them (then a list
of results). A result shows itself in a notebook (`_repr_png_`: its panel; `_repr_html_`: its
figures and the panel); so does a `Model` (inputs, scale, receptive field, op counts).
"""
from __future__ import annotations

import html
from dataclasses import fields, replace
from pathlib import Path
from typing import Callable, Sequence

from onnxlam.core.errors import InputError
from onnxlam.engine import model as engine_model
from onnxlam.lam.options import ModelOptions, as_inputs, option_names
from onnxlam.lam.result import Window
from onnxlam.methods import registry


def method_names() -> tuple[str, ...]:
    """The registered methods' names (`onnxlam.methods.registry`)."""
    return registry.names()


def resolve(model: str | Path, image=None, lr: bool = False) -> str:
    """A model as given (an ONNX file, a collection name, a PyTorch checkpoint) to its ONNX file."""
    from onnxlam.convert.collection import resolve_model

    first = image[0] if isinstance(image, (list, tuple)) else image
    return resolve_model(str(model), image=None if first is None or not isinstance(first, (str, Path))
                         else str(first), lr=lr)


class Model(engine_model.Model):
    """A network opened once for every method: `onnxlam.Model("model.onnx", device="cpu")`.

    `model` is an ONNX file, a name of the bundled collection or a PyTorch checkpoint; the keywords
    are the model options (device, value_range, bgr, batch_size, max_memory, inputs). Its gradient
    programs, memory plans and receptive field stay with it across calls and methods."""

    def __init__(self, model: str | Path, **options):
        unknown = sorted(set(options) - set(option_names(cls=ModelOptions)))
        if unknown:
            raise InputError(f"Model takes the model options ({', '.join(option_names(cls=ModelOptions))}); "
                             f"not {', '.join(unknown)}")
        super().__init__(resolve(model), check_ops=False, **options)

    def _repr_html_(self) -> str:
        info = self.info
        try:
            scale = f"×{self.scale}"
        except InputError as exc:
            scale = f"unknown ({exc})"
        ops = ", ".join(f"{k} {v}" for k, v in list(info.op_histogram.items())[:12])
        rows = [("model", info.path), ("sha256", info.sha256[:16] + "…"),
                ("input", f"{info.input.name}  {info.input.shape_text()}  {info.input.type_name}"),
                ("output", f"{info.output.name}  {info.output.shape_text()}  {info.output.type_name}"),
                ("scale", scale), ("pixels", f"range {self.value_range:g}, {self.channel_order.upper()}"),
                ("fixed inputs", ", ".join(f"{k}={v:g}" for k, v in self.inputs.items()) or "none"),
                ("receptive field", self.receptive_field.describe()),
                ("parameters", f"{info.parameters:,}"), ("ops", ops + (" …" if len(info.op_histogram) > 12 else ""))]
        body = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                       for k, v in rows)
        return f"<div><b>onnxlam.Model</b><table>{body}</table></div>"


def attribute(model, image, *, method: str = registry.DEFAULT, window, progress: Callable[[int, int], None] | None = None,
              **options):
    """The `method`'s result for `window` (one (x, y), or a list: then a list of results) on `image`
    (a path or an H×W×C array; a method of frames takes a list of them, or a folder).

    `model`: a path, a collection name, or an `onnxlam.Model` (then the model options are its own).
    `options`: the method's options by name, as the CLI's flags (`onnxlam NAME --help`)."""
    m = registry.method(method)
    if isinstance(model, engine_model.Model):
        mine = [k for k in options if k in option_names(cls=ModelOptions)]
        if mine:
            raise InputError(f"{', '.join(mine)}: the model's own options; give them to onnxlam.Model(...)")
        given = {k: v for k, v in model.given.items() if k in {f.name for f in fields(m.Options)}}
        given["inputs"] = as_inputs(given.get("inputs") or {})
        opts = replace(m.options(**options), **given)
        loaded = model
    else:
        opts = m.options(**options)
        loaded = m.open(resolve(model, image, getattr(opts, "lr", False)), opts, image)
    single = isinstance(window, Window) or (isinstance(window, Sequence) and len(window) == 2
                                            and all(isinstance(v, (int, float)) for v in window))
    size = getattr(opts, "size", Window(0, 0).size)
    wins = [_window(w, size) for w in ([window] if single else window)]
    if not wins:
        raise InputError("no window given: window=(x, y) or a list of them")
    results = m.attribute(loaded, image, wins, opts, progress=progress)
    return results[0] if single else results


def _window(w, size: int) -> Window:
    if isinstance(w, Window):
        return w
    try:
        x, y = w
        return Window(int(x), int(y), int(size))
    except (TypeError, ValueError):
        raise InputError(f"a window is (x, y); got {w!r}") from None
