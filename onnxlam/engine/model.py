"""A network ready for every method: `Model("model.onnx")`.

The model is opened, checked and normalised once (RGB in [0, 1], see `graph.model.normalise`); its
integer scale, static receptive field, forward pass (with the LAM detector appended), gradient
programs (built once per input shape, cached on disk) and memory plans (`planner.py`) stay with it,
so a notebook or a report that runs several methods on many images pays for each of them once.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import onnx

from onnxlam.core.errors import InputError, OnnxlamError
from onnxlam.engine import memory
from onnxlam.engine import program as programs
from onnxlam.core.version import __version__ as onnxlam_version
from onnxlam.engine.cache import ProgramCache, RecordCache
from onnxlam.engine.planner import Plan, Planner
from onnxlam.engine.program import GradientProgram, build_program, infer_scale, load_program, program_key
from onnxlam.engine.runtime import Session, create_session, resolve_device
from onnxlam.graph.detector import LAM, MASK, append_detector
from onnxlam.graph.model import (INPUT, OUTPUT, fix_input_shape, normalise, open_model, output_dims,
                                 require_standard_ops, size_dependent_padding)
from onnxlam.graph.receptive_field import ReceptiveField, receptive_field
from onnxlam.graph.receptive_field.field import RECORD_FORMAT
from onnxlam.graph.validity import invalid_model_message, weight_mismatches
from onnxlam.lam import image as images
from onnxlam.lam.options import ModelOptions

D = ModelOptions()  # the defaults of the keyword arguments below


def clipped(text: str, limit: int = 300) -> str:
    """`text` cut at a word boundary within `limit` characters, with an ellipsis where cut."""
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0] + " …"


class Model:
    """One network, opened, inspected and normalised once: its scale, receptive field, forward pass,
    gradient programs (built once per input shape) and memory plans, shared by every method."""

    def __init__(self, model: str | Path | tuple, *, device: str = D.device, value_range: float | None = D.value_range,
                 bgr: bool | None = D.bgr, batch_size: int | None = D.batch_size, cache: bool = True,
                 check_ops: bool = True, max_memory: int | str | None = D.max_memory,
                 inputs: dict[str, float] | tuple | None = None):
        ModelOptions(device=device, value_range=value_range, batch_size=batch_size, max_memory=max_memory).validate()
        self.model_path = str(model)
        self.given = {"device": device, "value_range": value_range, "bgr": bgr, "batch_size": batch_size,
                      "max_memory": max_memory, "inputs": dict(inputs or {})}  # the model options as given
        # extra inputs (a noise level, a quality factor) fixed to constants: a one-input network from here on
        self.inputs = dict(inputs or {})
        if isinstance(model, tuple):  # an in-memory (ModelProto, ModelInfo): a video model adapted to one image
            self.source, self.info = model
            self.model_path = self.info.path
        else:
            self.source, self.info = open_model(model, self.inputs)
        self._ops_checked = False
        if check_ops:  # `inspect` describes such models instead; forward-only methods run them
            self.check_ops()
        self.value_range = self.info.value_range if value_range is None else float(value_range)
        self.channel_order = self.info.channel_order if bgr is None else ("bgr" if bgr else "rgb")
        self.device = device
        self.batch_size = batch_size
        self.max_memory = None if max_memory is None else memory.parse_size(max_memory)
        self.cache = cache
        self.normalised = normalise(self.source, self.info, self.value_range, self.channel_order == "bgr")
        self._forward: Session | None = None
        self._plain: Session | None = None
        self._programs: dict[tuple, GradientProgram] = {}
        self._prebuilt: dict[tuple, onnx.ModelProto] = {}  # gradient graphs built ahead (see `prebuild`)
        self._scale: int | None = None
        self._rf: ReceptiveField | None = None
        self._size_hint: tuple[int, int] | None = None  # an LR image's (h, w), for the scale's probe
        self.planner = Planner(self, self.run_device)

    def check_ops(self) -> None:
        """InputError for ops outside the ONNX standard (gradient programs need standard ops); once."""
        if not self._ops_checked:
            require_standard_ops(self.source, self.model_path)
            self._ops_checked = True

    # --- model facts --------------------------------------------------------------------------
    @property
    def scale(self) -> int:
        """The integer scale, from shape inference at the file's size (else the LR image's, else 32×32),
        else a test run."""
        if self._scale is None:
            # An LR image's own size before 32×32: a TorchScript export with dynamic axes may still
            # bake its traced size into shape arithmetic (DITN's), and work at that size only.
            h, w = self.info.fixed_size or self._size_hint or (32, 32)
            shape = (self.info.fixed_batch or 1, self.info.channels, h, w)
            try:
                fixed = fix_input_shape(self.normalised, shape, self.model_path)
            except InputError:
                multiple = self.size_multiple(*shape)  # a U-Net's even sizes, said as such
                if multiple:
                    raise self.size_error(h, w, multiple) from None
                raise
            dims = output_dims(fixed)
            if not (dims and all(isinstance(d, int) and d > 0 for d in dims[2:])):
                probe = self.session_of(self.normalised, "cpu")
                x = np.zeros((self.info.fixed_batch or 1, self.info.channels, h, w), np.float32)
                try:
                    dims = probe.session.run([OUTPUT], {INPUT: x})[0].shape
                except Exception as exc:
                    raise self.failure(exc, x.shape, f"the model fails on a {w}×{h} test input, so its scale "
                                                     "is unknown") from None
            self._scale = infer_scale(h, w, dims[2], dims[3])
        return self._scale

    def forward(self, lr: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """F(x) (C×H×W) and D(F(x)) per window ([K]) for one LR image (C×h×w) and masks (K×(H−1)×(W−1))."""
        if self._forward is None:
            # no arena: run twice per image, its memory goes back for the gradient program
            self._forward = self.session_of(append_detector(self.normalised), self.device, arena=False)
        c, h, w = lr.shape
        try:
            sr, objective = self._forward.run({INPUT: lr[None].astype(np.float32),
                                               MASK: np.ascontiguousarray(masks[None], np.float32)})
        except Exception as exc:
            raise self.failure(exc, (1, c, h, w), f"the model failed on a {w}×{h} input") from None
        return sr[0], objective[0].astype(np.float64)

    def plain_session(self) -> Session:
        """The network's own forward session (no detector), for forward-only methods; made once."""
        if self._plain is None:
            self._plain = self.session_of(self.normalised, self.device)
        return self._plain

    def session_of(self, graph: onnx.ModelProto, device: str, arena: bool = True) -> Session:
        """A session for a graph of this model's own (the network, normalised): a graph onnxruntime
        refuses to load is the file's fault, said in one line that names the file."""
        try:
            return create_session(graph, device, arena=arena)
        except OnnxlamError:
            raise
        except Exception as exc:
            text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", str(exc).splitlines()[0])[:300]
            raise InputError(f"{self.model_path} is not a valid model: onnxruntime cannot load it ({text}); "
                             "re-export it or fix the file") from None

    def failure(self, exc: Exception, shape: tuple[int, ...], what: str) -> InputError:
        """The InputError for a run of the network that failed at input `shape` (N×C×h×w): the
        initializer that does not fit, where the graph shows one; else `what` and onnxruntime's words."""
        try:
            faults = weight_mismatches(self.normalised, tuple(shape))
        except Exception:  # a graph shape inference cannot read: onnxruntime's words it is
            faults = []
        if faults:
            return InputError(invalid_model_message(self.model_path, faults))
        n, c, h, w = shape
        multiple = self.size_multiple(n, c, h, w)
        if multiple:
            return self.size_error(h, w, multiple)
        return InputError(f"{self.model_path}: {what}: {clipped(str(exc).splitlines()[0])}")

    def size_error(self, h: int, w: int, multiple: int) -> InputError:
        return InputError(f"{self.model_path}: the model needs LR sizes that are multiples of {multiple}; this "
                          f"input is {w}×{h}: crop the image (or pass an LR image, --lr) to a multiple of "
                          f"{multiple}")

    def size_multiple(self, n: int, c: int, h: int, w: int) -> int | None:
        """The smallest of 2, 4, 8, 16 that h and w are not both multiples of and at whose multiples
        (rounded down) the network runs, or None: a U-Net's down- and up-sampling needs even sizes."""
        for m in (2, 4, 8, 16):
            if (h % m == 0 and w % m == 0) or h < m or w < m:
                continue
            x = np.zeros((n, c, h // m * m, w // m * m), np.float32)
            try:
                self.plain_session().session.run([OUTPUT], {INPUT: x})
                return m
            except Exception:  # not this multiple: the next, or another fault
                continue
        return None

    @property
    def run_device(self) -> str:
        """"cuda" or "cpu": where this model's sessions run."""
        return resolve_device(self.device)

    def budget(self) -> int:
        """The memory limit in bytes (see `Planner.budget`)."""
        return self.planner.budget()

    def plan(self, fold: int, h: int, w: int, windows: int = 1) -> Plan:
        """The batch for programs of LR size h×w (see `Planner.plan`)."""
        return self.planner.plan(fold, h, w, windows)

    def program(self, h: int, w: int, fold: int, windows: int = 1, batch: int | None = None) -> GradientProgram:
        """The gradient program for LR size h×w and `windows` windows, batched as the model and memory allow."""
        batch = batch or max(1, self.plan(fold, h, w, windows).batch)
        key = (batch, h, w, windows)
        if key not in self._programs:
            try:
                self._programs[key] = self.build(batch, h, w, windows)
            except InputError:
                if not self.may_fall_back(batch):
                    raise
                self._programs[key] = self.one_at_a_time(key)
        return self._programs[key]

    def may_fall_back(self, batch: int) -> bool:
        return batch > 1 and self.batch_size is None and self.info.fixed_batch in (None, 1)

    def one_at_a_time(self, key: tuple) -> GradientProgram:
        """The batch-1 program that replaces the batched one of `key`: the file fixes (or silently
        assumes) a batch of 1, or its batched program failed its confirmation."""
        _, h, w, windows = key
        single = self._programs.get((1, h, w, windows)) or self.build(1, h, w, windows)
        self._programs[key] = single
        return single

    def build(self, batch: int, h: int, w: int, windows: int, verify: bool = True,
              detector: str = LAM) -> GradientProgram:
        """A gradient program of `detector`'s objective (`graph.detector.KINDS`) for LR size h×w."""
        graph = self._prebuilt.pop((batch, h, w, windows), None) if detector == LAM else None
        return build_program((self.source, self.info), batch, h, w, self.value_range,
                             self.channel_order == "bgr", cache=self.cache and verify, device=self.device,
                             windows=windows, verify=verify, confirm_on_use=True, graph=graph, detector=detector)

    def prebuild(self, batch: int, h: int, w: int, windows: int) -> None:
        """Differentiate for a program that is likely needed next, without checking it (`build` checks it
        when it is asked for; a guess that is not asked for only cost the time it filled)."""
        if batch <= 1 or (batch, h, w, windows) in self._prebuilt:
            return
        key = program_key(self.info, batch, h, w, self.value_range, self.channel_order == "bgr", windows)
        if self.cache and ProgramCache().has(key):
            return
        try:
            self._prebuilt[(batch, h, w, windows)] = programs.gradient_graph(self.source, self.info, key)
        except Exception:  # `build` reports it, if the program is asked for
            pass

    def forget_prebuilt(self, unless: tuple) -> None:
        self._prebuilt = {k: v for k, v in self._prebuilt.items() if k == unless}

    @property
    def receptive_field(self) -> ReceptiveField:
        """The model's static receptive field (computed once; see `graph/receptive_field/`).

        A model whose baked padding depends on the input size (a checkpoint's size requirements, see
        `convert.pytorch`) is global: its reach at a border changes with the image's size, which the
        analysis at two sizes cannot see."""
        if self._rf is None:
            padded = size_dependent_padding(self.source)
            if padded:
                self._rf = ReceptiveField(True, None, padded)
        if self._rf is None:
            # The analysis is static but not free (0.2 s for EDSR-baseline): a warm run reads its record.
            store = RecordCache("fields") if self.cache else None
            slug = self._field_slug()
            self._rf = store.load(slug, ReceptiveField.from_record) if store else None
            if self._rf is None:
                try:
                    self._rf = receptive_field(self.normalised, INPUT, output_name=OUTPUT,
                                               size=self.info.fixed_size)
                except Exception as exc:  # an analysis failure must not stop LAM: treat as global
                    self._rf = ReceptiveField(True, None, f"receptive-field analysis failed: {exc}")
                    return self._rf
                if store:
                    store.save(slug, self._rf.to_record())
        return self._rf

    def _field_slug(self) -> str:
        """What the receptive field depends on: the model, its fixed inputs and size, this analysis."""
        extra = hashlib.sha256(repr((sorted(self.inputs.items()), self.info.fixed_size)).encode()).hexdigest()[:12]
        return f"{self.info.sha256[:32]}-{extra}-v{onnxlam_version}-f{RECORD_FORMAT}"

    @property
    def receptive_field_if_known(self) -> ReceptiveField | None:
        """The receptive field where it has been computed (a run that cropped), else None."""
        return self._rf

    def prepare(self, image: str | Path | np.ndarray, lr: bool = False,
                channels: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """The LR input and the cropped HR image (float32 C×h×w in [0, 1]; HR None with `lr`), spec §1.

        `channels`: the image's channels where the model's input has others (one frame of a video)."""
        pixels = images.read_image(image) if isinstance(image, (str, Path)) else images.from_array(image)
        pixels = images.match_channels(pixels, channels or self.info.channels)
        if lr and self._scale is None:
            self._size_hint = (int(pixels.shape[0]), int(pixels.shape[1]))
        x = images.to_unit(pixels) if lr else images.prepare_lr(pixels, self.scale)
        hr = None if lr else images.to_unit(pixels)[:, :x.shape[1] * self.scale, :x.shape[2] * self.scale]
        fixed = self.info.fixed_size
        if fixed and tuple(x.shape[1:]) != fixed:
            need = f"{fixed[1]}×{fixed[0]}" if lr else f"{fixed[1] * self.scale}×{fixed[0] * self.scale}"
            raise InputError(f"{self.model_path} takes LR input {fixed[1]}×{fixed[0]} only (fixed in the file); "
                             f"the image gives {x.shape[2]}×{x.shape[1]}: crop it to {need}, "
                             "or export the model with dynamic height and width")
        return x, hr

    def program_for(self, program, h: int, w: int, fold: int, windows: int,
                    batch: int | None = None) -> GradientProgram:
        """The program for LR size h×w: `program` (a file from `onnxlam export`, or a loaded one) checked
        to fit this model and size, else this model's own (`program`)."""
        if program is None:
            return self.program(h, w, fold, windows, batch)
        prog = program if isinstance(program, GradientProgram) else load_program(program)
        k = prog.key
        if k.detector != LAM:
            raise InputError(f"the program's objective is the {k.detector!r} detector, not LAM's; "
                             "export one with `onnxlam export`")
        if k.source_sha256 != self.info.sha256:
            raise InputError(f"the program was built from another model (sha256 {k.source_sha256[:12]}…, "
                             f"this one is {self.info.sha256[:12]}…); export it again from this model")
        if (k.channels, k.height, k.width) != (self.info.channels, h, w):
            raise InputError(f"the program is for LR input {k.width}×{k.height}, the image gives {w}×{h}; "
                             f"export a program with --size {h} {w}")
        if (k.value_range, k.channel_order) != (self.value_range, self.channel_order):
            raise InputError(f"the program was exported for value range {k.value_range:g} / {k.channel_order}, "
                             f"this run uses {self.value_range:g} / {self.channel_order}")
        return prog
