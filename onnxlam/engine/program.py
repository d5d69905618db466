"""The gradient program: one ONNX model computing D(F(x)) and ∇_x D(F(x)) for a batch of images.

Built from the normalised model (see `model.normalise`) by fixing the input shape, appending the
LAM detector (`detector.py`), inferring every shape and differentiating `lam_objective` with respect
to `lam_input` with `onnx_ad.reverse`. The objective is N×K (K windows); the seed is one identity
matrix per batch element, so one reverse pass gives every element's gradient for every window
(a batch element's objective depends on that element alone).

Programs are cached on disk (see `cache.py`) and checked once, when built (see `gradcheck.py`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx
import onnx_ad

from onnxlam.core.version import __version__ as onnxlam_version
from onnxlam.engine.cache import ProgramCache, RecordCache, is_number, require
from onnxlam.graph.validity import invalid_model_message, weight_mismatches
from onnxlam.graph.detector import DESCRIPTIONS, KINDS, LAM, MASK, OBJECTIVE, append_detector, mask_size
from onnxlam.core.errors import InputError, NumericalError, OnnxlamError
from onnxlam.graph.model import INPUT, ModelInfo, fix_input_shape, normalise, open_model, require_standard_ops
from onnxlam.engine.gradcheck import (FD_TOLERANCE, LOCAL_TOLERANCE, check_forward_reverse, check_gradient,
                                     check_local_derivatives, combine, rule_signatures)
from onnxlam.graph.rewrite import make_differentiable, speed_up
from onnxlam.engine.runtime import Session, create_session

FORMAT = "4"
CHECK_SIDE = 64  # gradient checks run on programs of at most this many LR pixels a side (see _verify)
RULE_SIDE = 16   # and the node-local check of a model's derivative rules at this size, once (see RuleCheck)
BATCH_TOLERANCE = 1e-4  # a batched program against the checked batch-1 program, relative to its largest value
SEED = "adj_" + OBJECTIVE
GRADIENT = "adj_" + INPUT
DETECTOR = DESCRIPTIONS[LAM]


@dataclass(frozen=True)
class ProgramKey:
    """What a program depends on: the source model and the conventions and shapes it was built for."""

    source_sha256: str
    batch: int
    channels: int
    height: int
    width: int
    value_range: float
    channel_order: str
    windows: int = 1
    detector: str = LAM  # the objective's kind (detector.KINDS)

    def slug(self) -> str:
        kind = "" if self.detector == LAM else f"-d{self.detector}"  # LAM programs keep their old slugs
        return (f"{self.source_sha256[:32]}-b{self.batch}-k{self.windows}-c{self.channels}-{self.height}x{self.width}"
                f"-r{self.value_range:g}-{self.channel_order}{kind}-ad{onnx_ad.__version__}-f{FORMAT}")


@dataclass
class GradientProgram:
    """A built (or loaded) gradient program and the facts recorded with it."""

    model: onnx.ModelProto
    key: ProgramKey
    scale: int
    fd_error: float | None = None
    build_seconds: float = 0.0
    _sessions: dict = field(default_factory=dict, repr=False)
    # A batched program of the checked program's size is confirmed on its first real batch (see
    # `confirm`): until then `pending` holds the checked batch-1 program, and it is not cached.
    pending: GradientProgram | None = field(default=None, repr=False)
    _store: ProgramCache | None = field(default=None, repr=False)

    @property
    def batch(self) -> int:
        return self.key.batch

    @property
    def output_size(self) -> tuple[int, int]:
        return self.key.height * self.scale, self.key.width * self.scale

    def session(self, device: str = "auto") -> Session:
        if device not in self._sessions:
            self._sessions[device] = create_session(self.model, device)
        return self._sessions[device]

    @property
    def windows(self) -> int:
        return self.key.windows

    @property
    def mask_size(self) -> tuple[int, int]:
        """The spatial size of `lam_mask`: (H−1)×(W−1) for the LAM detector, H×W for the intensity sum."""
        return mask_size(self.key.detector, *self.output_size)

    def objective_and_gradient(self, x: np.ndarray, mask: np.ndarray, device: str = "auto"):
        """D ([B, K]) and ∇_x D ([B, K, C, h, w]) for images `x` ([B, C, h, w]) and masks ([B, K, H−1, W−1])."""
        return self.unpack(self.session(device).run(self.feeds(x, mask)))

    def feeds(self, x: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
        """The program's inputs for images `x` and masks: the seed is one identity matrix per element."""
        b, k = x.shape[0], self.key.windows
        seed = np.ascontiguousarray(np.broadcast_to(np.eye(k, dtype=np.float32), (b, k, k)))
        return {INPUT: np.ascontiguousarray(x, np.float32), MASK: np.ascontiguousarray(mask, np.float32),
                SEED: seed}

    @staticmethod
    def unpack(outputs) -> tuple[np.ndarray, np.ndarray]:
        """(D, ∇_x D as [B, K, C, h, w]) from the program's outputs."""
        objective, gradient = outputs
        return objective, np.moveaxis(gradient, -1, 1)

    def confirm(self, x: np.ndarray, mask: np.ndarray, gradient: np.ndarray, device: str = "auto",
                used: int | None = None) -> None:
        """Check a batched program on its first real batch, before any of its gradients is used.

        The first and the last real element of the batch (`used` of them) must get exactly the
        gradient that the checked batch-1 program (`pending`) gives each on its own: a program whose
        graph mixes batch elements, or whose batched differentiation went wrong, differs there. Then
        the program counts as verified and goes to the cache. This replaces a separate check of the
        batched program on random images (one batched run and one single run per element) by two
        single runs.
        """
        if self.pending is None:
            return
        used = x.shape[0] if used is None else used
        worst = 0.0
        for b in sorted({0, used - 1}):
            _, single = self.pending.objective_and_gradient(x[b:b + 1], mask[b:b + 1], device)
            scale = max(float(np.abs(single).max()), 1e-30)
            worst = max(worst, float(np.abs(gradient[b] - single[0]).max()) / scale)
        if not worst <= BATCH_TOLERANCE:
            raise NumericalError(f"the batched gradient program (batch {self.batch}) gives other gradients than "
                                 f"the checked batch-1 program on the same input (relative difference "
                                 f"{worst:.2e} > {BATCH_TOLERANCE:.0e}); please report this model to onnxlam")
        self.fd_error = max(self.pending.fd_error, worst * FD_TOLERANCE / BATCH_TOLERANCE)
        self.pending = None
        if self._store is not None:
            self._store.save(self)

    def metadata(self) -> dict[str, str]:
        k = self.key
        H, W = self.output_size
        return {"onnxlam.program_format": FORMAT, "onnxlam.version": onnxlam_version,
                "onnxlam.onnx_ad_version": onnx_ad.__version__, "onnxlam.source_sha256": k.source_sha256,
                "onnxlam.input_shape": f"{k.batch},{k.channels},{k.height},{k.width}",
                "onnxlam.windows": str(k.windows),
                "onnxlam.output_shape": f"{k.batch},{k.channels},{H},{W}", "onnxlam.scale": str(self.scale),
                "onnxlam.value_range": f"{k.value_range:g}", "onnxlam.channel_order": k.channel_order,
                "onnxlam.detector": DESCRIPTIONS[k.detector], "onnxlam.detector_kind": k.detector,
                "onnxlam.fd_relative_error": "" if self.fd_error is None else f"{self.fd_error:.3e}"}

    def save(self, path: str | Path) -> None:
        """Write the program with its metadata (source sha256, shapes, detector, check result)."""
        m = onnx.ModelProto()
        m.CopyFrom(self.model)
        del m.metadata_props[:]
        onnx.helper.set_model_props(m, self.metadata())
        onnx.save(m, str(path))


def program_key(info: ModelInfo, batch: int, height: int, width: int, value_range: float | None = None,
                bgr: bool | None = None, windows: int = 1, detector: str = LAM) -> ProgramKey:
    value_range = info.value_range if value_range is None else value_range
    order = info.channel_order if bgr is None else ("bgr" if bgr else "rgb")
    if detector not in KINDS:
        raise InputError(f"unknown detector {detector!r}; choose one of {', '.join(KINDS)}")
    return ProgramKey(info.sha256, batch, info.channels, height, width, value_range, order, windows, detector)


def build_program(model: str | Path | tuple[onnx.ModelProto, ModelInfo], batch: int, height: int, width: int,
                  value_range: float | None = None, bgr: bool | None = None, cache: bool = True,
                  verify: bool = True, device: str = "auto", windows: int = 1,
                  detector: str = LAM, confirm_on_use: bool = False,
                  graph: onnx.ModelProto | None = None) -> GradientProgram:
    """The gradient program of `model` for input batch×C×height×width and `windows` windows.

    `detector` is the objective (`detector.KINDS`): the LAM detector, or the window's intensity sum.

    From the cache when there.

    A program is verified before it is first used (and cached); a mismatch is a NumericalError naming
    the model. With `confirm_on_use`, a batched program of the check size is left to be confirmed on
    its first real batch (`GradientProgram.confirm`, which `integrate` calls) instead of on random
    images now; it is cached once confirmed. `graph`: the key's `gradient_graph`, where the caller
    built it ahead (it is checked here all the same).
    """
    source, info = open_model(model) if isinstance(model, (str, Path)) else model
    key = program_key(info, batch, height, width, value_range, bgr, windows, detector)
    store = ProgramCache() if cache else None
    if store is not None:
        cached = store.load(key)
        if cached is not None:
            graph, record = cached
            return GradientProgram(graph, key, record["scale"], record["fd_error"])
    start = time.perf_counter()
    graph = graph if graph is not None else gradient_graph(source, info, key)
    scale = _scale_of(graph, key)
    program = GradientProgram(graph, key, scale)
    if verify:
        try:
            program.fd_error = _verify(program, (source, info), value_range, bgr, cache, device, confirm_on_use)
        except OnnxlamError:
            raise
        except Exception as exc:  # onnxruntime's own failures: a batch the file does not allow, say
            faults = weight_mismatches(source, (key.batch, key.channels, key.height, key.width))
            if faults:
                raise InputError(invalid_model_message(info.path, faults)) from None
            raise InputError(f"{info.path}: the gradient program fails at input "
                             f"{key.batch}×{key.channels}×{key.height}×{key.width} "
                             f"({str(exc).splitlines()[0][:300]})") from None
        if not program.fd_error <= FD_TOLERANCE:
            raise NumericalError(
                f"{info.path}: the gradient program fails its check (forward vs reverse mode, node-local "
                f"differences: relative error "
                f"{program.fd_error:.2e} > {FD_TOLERANCE:.0e}); please report this model to onnxlam")
    program.build_seconds = time.perf_counter() - start
    if program.pending is not None:
        program._store = store  # cached once confirmed
    elif store is not None:
        store.save(program)
    return program


def check_size(info: ModelInfo, height: int, width: int) -> tuple[int, int]:
    """The LR size gradient checks run at: the program's own, at most CHECK_SIDE a side (fixed: the file's)."""
    if info.fixed_size:
        return info.fixed_size
    return min(height, CHECK_SIDE), min(width, CHECK_SIDE)


def _verify(program: GradientProgram, model, value_range, bgr, cache: bool, device: str,
            confirm_on_use: bool = False) -> float:
    """The check of `gradcheck.py`, run where it costs little memory (it needs ~4× the program's).

    A batch-1 program of at most CHECK_SIDE² pixels is checked as it is. A larger one is built by the
    same differentiation as a batch-1 program of check size, which is checked instead; at the same size,
    the batched program must then give each element the gradient the checked program gives it; at any
    size, a batch element's window may move no other element's gradient.
    """
    k = program.key
    info = model[1]
    size = check_size(info, k.height, k.width)
    if (k.batch, k.height, k.width) == (1,) + size:
        return check_program(program, model, cache, device)
    try:
        reference = build_program(model, 1, size[0], size[1], value_range, bgr, cache=cache, device=device,
                                  windows=k.windows, detector=k.detector)
    except InputError:  # the model refuses the check size (a minimum size, say): check the program itself
        check_batch_independence(program, info, device)
        return check_program(program, model, cache, device)
    if size == (k.height, k.width) and confirm_on_use:
        program.pending = reference  # `confirm` compares the first real batch with it
        return reference.fd_error
    check_batch_independence(program, info, device)
    if size == (k.height, k.width):
        return max(reference.fd_error,
                   check_against(program, reference, device) * FD_TOLERANCE / BATCH_TOLERANCE)
    return reference.fd_error


def check_against(program: GradientProgram, reference: GradientProgram, device: str = "auto") -> float:
    """Largest relative difference between a batched program's gradients and those of a checked batch-1
    program of the same size, each element on its own random image (the others' windows empty)."""
    k = program.key
    Hm, Wm = program.mask_size
    rng = np.random.default_rng(2)
    x = rng.uniform(0.2, 0.8, (k.batch, k.channels, k.height, k.width)).astype(np.float32)
    mask = np.zeros((k.batch, k.windows, Hm, Wm), np.float32)
    size = min(16, Hm, Wm)
    for b in range(k.batch):  # a window in a different place for each element and window slot
        for j in range(k.windows):
            top, left = rng.integers(0, Hm - size + 1), rng.integers(0, Wm - size + 1)
            mask[b, j, top:top + size, left:left + size] = 1.0
    _, batched = program.objective_and_gradient(x, mask, device)
    worst = 0.0
    for b in range(k.batch):
        _, single = reference.objective_and_gradient(x[b:b + 1], mask[b:b + 1], device)
        scale = max(float(np.abs(single).max()), 1e-30)
        worst = max(worst, float(np.abs(batched[b] - single[0]).max()) / scale)
    return worst


def gradient_graph(source: onnx.ModelProto, info: ModelInfo, key: ProgramKey) -> onnx.ModelProto:
    """Normalise, fix shapes, append the detector, infer shapes and differentiate."""
    with_detector = objective_graph(source, info, key)
    try:
        reverse = onnx_ad.reverse(with_detector, inputs=[INPUT], outputs=[OBJECTIVE], layout="onnx")
    except onnx_ad.UnsupportedOperator as exc:
        raise InputError(f"{info.path}: cannot differentiate the model: {exc}") from None
    for value in list(reverse.graph.input) + list(reverse.graph.output):
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param == "nadj":  # the seed count is K: static shapes let the rewrites apply
                dim.dim_value = key.windows
    return speed_up(reverse)


def objective_graph(source: onnx.ModelProto, info: ModelInfo, key: ProgramKey) -> onnx.ModelProto:
    """lam_input, lam_mask → lam_objective for `key`'s shapes: what `gradient_graph` differentiates."""
    require_standard_ops(source, info.path)
    normalised = normalise(source, info, key.value_range, key.channel_order == "bgr")
    fixed = fix_input_shape(normalised, (key.batch, key.channels, key.height, key.width), info.path)
    missing = ungradable_ops(fixed)
    if missing:
        raise InputError(f"{info.path}: no gradient rule for {', '.join(missing[:5])}"
                         f"{' and more' if len(missing) > 5 else ''}; onnxlam cannot differentiate "
                         "through these ops (re-export the model without them)")
    with_detector = append_detector(fixed, keep_sr=False, windows=key.windows, kind=key.detector)
    try:
        with_detector = onnx.shape_inference.infer_shapes(with_detector, strict_mode=True, data_prop=True)
        return make_differentiable(with_detector)
    except Exception as exc:
        raise InputError(f"{info.path}: shape inference failed after appending the detector: {exc}") from None


def _scale_of(graph: onnx.ModelProto, key: ProgramKey) -> int:
    """The scale, read off the mask input, whose (H−1)×(W−1) follows the inferred SR output."""
    mask = next(v for v in graph.graph.input if v.name == MASK)
    hm, wm = (d.dim_value for d in mask.type.tensor_type.shape.dim[2:])
    extra = 0 if key.detector != LAM else 1  # the LAM mask is (H−1)×(W−1)
    return infer_scale(key.height, key.width, hm + extra, wm + extra)


def infer_scale(h: int, w: int, H: int, W: int) -> int:
    """The integer scale factor, the same on both axes, or an InputError."""
    if H % h or W % w or H // h != W // w or H // h < 1:
        raise InputError(f"the model maps {w}×{h} to {W}×{H}: onnxlam needs an integer scale factor "
                         "that is the same for both axes")
    return H // h


def check_finite_differences(program: GradientProgram, device: str = "auto", seed: int = 0) -> float:
    """The gradient check of `gradcheck.check_gradient` (forward vs reverse, node-local differences)."""
    return check_gradient(program, device, seed)


def check_program(program: GradientProgram, model, cache: bool = True, device: str = "auto") -> float:
    """`check_gradient` as a new program gets it: forward vs reverse on the program itself, and the
    model's derivative rules checked once per model at a small size (`RuleCheck`)."""
    rules = RuleCheck.plan(model, program, cache)
    error = combine(check_forward_reverse(program, device), rules.run(program, device))
    rules.record()
    return error


@dataclass
class RuleCheck:
    """The node-local check of a model's derivative rules (`gradcheck.check_local_derivatives`), run
    once per model at a small size instead of with every new program.

    onnx-ad's rule for an op (and its attributes, and which inputs are constant) does not depend on
    the image's size. Checked on the model's objective graph at RULE_SIDE² LR pixels (a tenth of the
    cost at 48², a sixteenth at 64²), the result holds for every program whose rule signatures
    (`gradcheck.rule_signatures`) it covers, and is cached per model. A program with signatures the
    small graph lacks (its graph changes with the size), a model that refuses the small size and a
    fixed-size model are checked on the program's own primal, as `check_gradient` does. What is
    size-dependent (shapes, slicing, padding, the adjoint graph) stays with forward vs reverse, which
    every program still gets at its own check size.
    """

    signatures: frozenset[str]
    error: float | None = None             # the cached result: nothing to run
    small: GradientProgram | None = None   # the small objective graph to check (a primal only)
    slug: str | None = None                # where a passing result of `small` is cached
    covers: frozenset[str] = frozenset()   # the rule signatures of `small`: what its result holds for
    checked: float | None = field(default=None, repr=False)  # what `run` found on `small`

    @classmethod
    def plan(cls, model, program: GradientProgram, cache: bool = True) -> "RuleCheck":
        source, info = model
        k = program.key
        signatures = rule_signatures(program.model)
        slug = (f"{k.source_sha256[:32]}-k{k.windows}-c{k.channels}-r{k.value_range:g}-{k.channel_order}-"
                f"{k.detector}-ad{onnx_ad.__version__}-v{onnxlam_version}-f{FORMAT}")
        record = RecordCache("rules").load(slug, read_rule_record) if cache else None
        if record is not None and record[0] <= LOCAL_TOLERANCE and signatures <= record[1]:
            return cls(signatures, error=record[0])
        small_size = (min(RULE_SIDE, k.height), min(RULE_SIDE, k.width))
        if info.fixed_size or small_size == (k.height, k.width):
            return cls(signatures)
        try:
            key = replace(k, batch=1, height=small_size[0], width=small_size[1])
            graph = objective_graph(source, info, key)
            small = GradientProgram(graph, key, _scale_of(graph, key))
        except Exception:  # the model refuses the small size: check the program's own rules
            return cls(signatures)
        covers = rule_signatures(graph)
        if not signatures <= covers:
            return cls(signatures)
        return cls(signatures, small=small, slug=slug if cache else None, covers=covers)

    def argument(self, folder: Path) -> str:
        """This check as the memory probe's child receives it ("own", "cached:ERROR" or the path of the
        small graph, written into `folder`); `from_argument` reads it back there."""
        if self.error is not None:
            return f"cached:{self.error!r}"
        if self.small is None:
            return "own"
        path = Path(folder) / "rules.onnx"
        self.small.save(path)
        return str(path)

    @classmethod
    def from_argument(cls, text: str) -> "RuleCheck":
        if text.startswith("cached:"):
            return cls(frozenset(), error=float(text.split(":", 1)[1]))
        return cls(frozenset(), small=None if text == "own" else load_program(text))

    def run(self, program: GradientProgram, device: str = "auto") -> float:
        """The node-local check's error for `program` (LOCAL_TOLERANCE applies)."""
        if self.error is not None:
            return self.error
        if self.small is not None:
            try:
                self.checked = check_local_derivatives(self.small, device)
                return self.checked
            except Exception:  # the small size fails at run time (a minimum size inside the graph)
                self.small = None
        return check_local_derivatives(program, device)

    def record(self) -> None:
        """Cache a passing result of the small graph for the model's later programs."""
        if self.slug is not None and self.checked is not None and self.checked <= LOCAL_TOLERANCE:
            RecordCache("rules").save(self.slug, {"error": self.checked, "signatures": sorted(self.covers)})


def read_rule_record(data) -> tuple[float, frozenset[str]]:
    """A cached rule check as `RuleCheck.record` wrote it: (error, signatures); DamagedEntry otherwise."""
    require(isinstance(data, dict) and set(data) == {"error", "signatures"}, "a rule check is not {error, signatures}")
    require(is_number(data["error"]) and data["error"] >= 0, "a rule check's error is not a number")
    require(isinstance(data["signatures"], list) and all(isinstance(s, str) for s in data["signatures"]),
            "a rule check's signatures are not a list of strings")
    return float(data["error"]), frozenset(data["signatures"])


def check_batch_independence(program: GradientProgram, info: ModelInfo, device: str = "auto") -> None:
    """With windows on some batch elements only, the others may get no gradient.

    A model whose graph mixes batch elements (a batch baked into its reshapes, a reduction over the
    batch) would otherwise give gradients that are consistent overall yet wrong per element. A leak may
    go one way only (element 1 moved by element 0, not 0 by 1), so two runs: element 0 lit alone, then
    every element but 0. They see every leak into or out of element 0, which is every leak of a graph
    that mixes the batch as a whole; a leak between two other elements alone would need 2·⌈log₂ B⌉
    runs of the full batch, which a program's first use cannot afford at large sizes.
    """
    k = program.key
    if k.batch == 1:
        return
    x = np.random.default_rng(1).uniform(0.2, 0.8, (k.batch, k.channels, k.height, k.width)).astype(np.float32)
    first = np.arange(k.batch) == 0
    for on in (first, ~first):
        mask = np.zeros((k.batch, k.windows) + program.mask_size, np.float32)
        mask[on] = 1.0
        _, gradient = program.objective_and_gradient(x, mask, device)
        if np.any(gradient[~on] != 0):
            raise InputError(f"{info.path}: the model mixes batch elements at batch {k.batch}; "
                             "run it with --batch-size 1")


def load_program(path: str | Path) -> GradientProgram:
    """A program written by `GradientProgram.save` (or `onnxlam export`)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"program not found: {path}")
    try:
        m = onnx.load(str(path))
    except Exception as exc:
        raise InputError(f"cannot read program {path} ({type(exc).__name__}: {exc})") from None
    meta = {p.key: p.value for p in m.metadata_props}
    if meta.get("onnxlam.program_format") != FORMAT:
        raise InputError(f"{path} is not an onnxlam gradient program of format {FORMAT}; "
                         "write one with `onnxlam export`")
    try:
        b, c, h, w = (int(v) for v in meta["onnxlam.input_shape"].split(","))
        key = ProgramKey(meta["onnxlam.source_sha256"], b, c, h, w, float(meta["onnxlam.value_range"]),
                         meta["onnxlam.channel_order"], int(meta.get("onnxlam.windows", "1")),
                         meta.get("onnxlam.detector_kind", LAM))
        scale = int(meta["onnxlam.scale"])
        fd = float(meta["onnxlam.fd_relative_error"]) if meta.get("onnxlam.fd_relative_error") else None
    except (KeyError, ValueError) as exc:
        raise InputError(f"{path}: the program's metadata is incomplete or malformed ({exc})") from None
    return GradientProgram(m, key, scale, fd)


def ungradable_ops(model: onnx.ModelProto) -> list[str]:
    """Nodes (as "OpType (node name)") between the input and the output that onnx-ad has no rule for.

    Uses onnx-ad's own pre-passes (lowering, function expansion) so ops it handles by expansion
    are not reported.
    """
    from onnx_ad.expand import expand_functions
    from onnx_ad.lower import lower
    from onnx_ad.recurrent import expand_recurrent
    from onnx_ad.rules import REVERSE

    try:
        m = expand_functions(lower(expand_recurrent(model)))
    except Exception:  # the pre-passes need shapes for some ops; report on the graph as it is
        m = model
    live = {m.graph.input[0].name}
    missing = []
    for node in m.graph.node:
        if not live.intersection(node.input):
            continue
        live.update(node.output)
        standard = node.domain in ("", "ai.onnx")
        if not (standard and node.op_type in REVERSE):
            op = node.op_type if standard else f"{node.domain}.{node.op_type}"
            missing.append(f"{op} (node '{node.name or node.output[0]}')")
    return missing
