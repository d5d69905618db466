"""Planning a run: how many path steps go in one batch, and what to crop when not even one fits.

Memory is measured, not estimated (see `memory.py`): the first time a model meets an input size, its
batch-1 gradient program is probed and the footprint cached. The planner turns the footprint and the
budget (`--max-memory`, else a safe fraction of what is free) into a `Plan` per input shape, decided
once, so free memory moving between runs never rebuilds programs; and, where not even one step fits,
into the largest crop around the windows that does (`memory_crop`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from onnxlam.engine import memory
from onnxlam.engine.cache import ProgramCache, RecordCache
from onnxlam.engine.cropping import Crop, choose_crop, memory_crop, windows_box
from onnxlam.engine.program import FORMAT, RuleCheck, check_size
from onnxlam.core.errors import InputError
from onnxlam.engine.gradcheck import FD_TOLERANCE
from onnxlam.lam.options import MAX_AUTO_BATCH
from onnxlam.lam.result import Window

CROP_STEP = 16  # memory crops' sides are multiples of this (and of the model's period): a few MB more or
               # less free memory must not change the crop, and so the map, from one run to the next


@dataclass(frozen=True)
class Plan:
    """How the programs of one input size run: `batch` images per step (0: not even one fits) and the
    peak predicted from the measured footprint (None where nothing was measured)."""

    batch: int
    predicted_peak: int | None = None
    footprint: memory.Footprint | None = None
    base: int = 0  # what was in use when the plan was made


FORWARD_CAP = {"cpu": 16, "cuda": 64}  # images per forward-only run (CEM's interventions, say) when memory allows


@dataclass(frozen=True)
class ForwardBatch:
    """A forward-only method's batch, sized from one measured forward pass: `batch` images per run,
    the bytes one image needed (None: not measurable here) and what was in use after it, beyond the
    planner's origin."""

    batch: int
    per_image: int | None
    in_use: int | None


def plan_batch(per_image: float | None, in_use: float | None, budget: float, cap: int) -> int:
    """The most images per run (≤ cap) whose predicted memory, what is in use now plus the measured
    per-image forward memory times the batch (with memory.margin), fits the budget; 1 when nothing
    could be measured (the safe choice) or when not even one fits."""
    if per_image is None or in_use is None:
        return 1
    fits = [b for b in range(1, cap + 1) if in_use + memory.margin(b * per_image) <= budget]
    return max(fits, default=1)


class Planner:
    """The batch and crop decisions for one model (`model`: its Analyzer, for the model's facts and
    for building the batch-1 programs the probes measure)."""

    def __init__(self, model, device: str):
        self.model = model
        self.device = device
        self._plans: dict[tuple, Plan] = {}
        self._footprints: dict[tuple, memory.Footprint | None] = {}
        self._budget: tuple[int, int] | None = None  # (limit, what was in use before onnxlam's sessions)

    @property
    def origin(self) -> int:
        """What was in use on the device before this model's sessions (0 on the CPU)."""
        self.budget()
        return self._budget[1]

    def budget(self) -> int:
        """The memory limit in bytes: `max_memory`, else a safe fraction of what is free (decided once).

        On the CPU it bounds this process's resident set; on CUDA, the device memory onnxlam's sessions hold.
        """
        if self._budget is None:
            device = self.device
            origin = 0 if device == "cpu" else (memory.in_use(device) or 0)
            self._budget = (self.model.max_memory or memory.default_budget(device), origin)
        return self._budget[0]

    def _in_use(self) -> int | None:
        self.budget()
        now = memory.in_use(self.device)
        return None if now is None else now - self._budget[1]

    def forward_batch(self, run_one, input_values: int, batch_size: int | None = None):
        """(`run_one()`'s output, ForwardBatch): one image's forward pass run while its memory is
        measured (its session made beforehand, so that only the run is measured), and the batch of
        such passes the memory limit allows; `batch_size` where given, 1 for a model whose batch is
        fixed at 1. `input_values`: the floats of one image's input (its copies count too)."""
        self.budget()  # fixes the limit (and, on CUDA, what was in use before the session)
        if self.device == "cpu":
            memory.trim()  # what an earlier run freed would otherwise hide what this pass needs
        before = memory.in_use(self.device)
        with memory.PeakMeter(self.device) as meter:
            output = run_one()
        per_image = None if meter.peak is None or before is None else max(meter.peak - before, 0) + 8 * input_values
        in_use = memory.in_use(self.device)
        in_use = None if in_use is None else in_use - self.origin
        if batch_size is not None:
            batch = batch_size
        elif self.model.info.fixed_batch == 1:
            batch = 1
        else:
            batch = plan_batch(per_image, in_use, self.budget(), FORWARD_CAP[self.device])
        return output, ForwardBatch(batch, per_image, in_use)

    def footprint(self, h: int, w: int, windows: int, meanwhile=None) -> memory.Footprint | None:
        """The measured memory of this model's batch-1 programs (see `memory.py`), probed once and cached.

        Images up to CHECK_SIDE a side are probed at their own size; larger ones at the check size
        (`program.check_size`, at most CHECK_SIDE a side) and half of it (and in between for global
        networks) and extrapolated. None when the probes fail. `meanwhile`: work to do while the
        first probe runs (see `memory.probe`).
        """
        check = check_size(self.model.info, h, w)  # the size new programs are checked at: probed last
        if self.model.info.fixed_size or check == (h, w):
            sizes = [check]
        else:
            steps = [2, 4 / 3, 1] if self.model.receptive_field.global_ else [2, 1]
            sizes = [(max(1, int(check[0] / f)), max(1, int(check[1] / f))) for f in steps]
        key = (tuple(sizes), windows)
        if key not in self._footprints:
            import onnxruntime

            from onnxlam.core.version import __version__

            device = self.device
            slug = (f"{self.model.info.sha256[:32]}-k{windows}-{device}-{'_'.join(f'{a}x{b}' for a, b in sizes)}"
                    f"-r{self.model.value_range:g}-{self.model.channel_order}-ort{onnxruntime.__version__}"
                    f"-t{os.environ.get('ONNXLAM_THREADS', os.cpu_count())}-v{__version__}-f{FORMAT}-m2")
            store = RecordCache("footprints") if self.model.cache else None
            footprint = store.load(slug, memory.Footprint.from_json) if store else None
            if footprint is None:
                try:
                    probes = tuple(self._probe(a, b, windows, device, (a, b) == check, meanwhile if i == 0 else None)
                                   for i, (a, b) in enumerate(sizes))
                    footprint = memory.Footprint(probes, quadratic=len(probes) > 2)
                    if store:
                        store.save(slug, footprint.to_json())
                except Exception:  # the model refuses the probe sizes, or memory is not measurable here
                    footprint = None
            self._footprints[key] = footprint
        return self._footprints[key]

    def _probe(self, h: int, w: int, windows: int, device: str, check: bool, meanwhile=None) -> memory.Probe:
        """One memory probe of the batch-1 program of h×w. The program probed at the check size is the
        one new programs are checked against (`program._verify`): the probe checks it too, and it goes
        to the program cache checked, so the check is not run a second time."""
        program = self.model.build(1, h, w, windows, verify=False)
        rules = RuleCheck.plan((self.model.source, self.model.info), program, self.model.cache) if check else None
        probe = memory.probe(program, device, check=check, rules=rules, meanwhile=meanwhile)
        if self.model.cache and program.fd_error is not None and program.fd_error <= FD_TOLERANCE:
            ProgramCache().save(program)
        return probe

    def _extra(self, batch: int, h: int, w: int, windows: int) -> int:
        """Host bytes of one step's outputs as `integrate` handles them (float32 in, float64 sum)."""
        return batch * windows * self.model.info.channels * h * w * 16 if self.device == "cpu" else 0

    def plan(self, fold: int, h: int, w: int, windows: int = 1) -> Plan:
        """The batch for programs of LR size h×w: the largest whose measured footprint fits the budget.

        Decided once per shape (free memory moving must not rebuild programs). Batch 0 means that not
        even one step fits: the caller crops (see `run_windows`).
        """
        if self.model.info.fixed_batch not in (None, 1):
            return Plan(self.model.info.fixed_batch)
        if self.model.batch_size is not None:
            return Plan(min(self.model.batch_size, fold))
        cap = min(MAX_AUTO_BATCH[self.device], fold)
        key = (h, w, windows, cap)
        if key not in self._plans:
            base = self._in_use()  # before probing: what probing leaves behind is free for reuse
            # while the probe's child measures and checks, build the likeliest batched program
            footprint = self.footprint(h, w, windows, meanwhile=lambda: self.model.prebuild(cap, h, w, windows))
            if footprint is None or base is None:
                self._plans[key] = Plan(1)  # nothing measurable: one step at a time is the safe choice
            else:
                def need(b: int) -> int:  # a step of b images, or the check of a new program if more
                    run = self._extra(b, h, w, windows) + footprint.peak(b, h * w)
                    return int(base + memory.margin(max(run, footprint.check)))

                batch = max((b for b in range(1, cap + 1) if need(b) <= self.budget()), default=0)
                self._plans[key] = Plan(batch, need(max(batch, 1)), footprint, base)
            self.model.forget_prebuilt(unless=(self._plans[key].batch, h, w, windows))  # a wrong guess holds nothing
        return self._plans[key]

    def crop_to_fit(self, plan: Plan, region: Crop | None, wins: list[Window], lr_size: tuple[int, int],
                    windows: int) -> tuple[Crop, str]:
        """The largest crop around `wins` whose one step fits the budget, and the warning that says so."""
        h, w = lr_size
        inside = (region.top, region.left, region.bottom, region.right) if region else (0, 0, h, w)
        limit = memory.format_size(self.budget())
        need = memory.format_size(plan.predicted_peak or 0)
        size = f"{inside[3] - inside[1]}×{inside[2] - inside[0]}"
        if self.model.info.fixed_size:
            raise InputError(f"one path step of {self.model.model_path} needs about {need}, over the memory limit "
                             f"{limit}, and its input size is fixed, so it cannot be cropped: raise --max-memory")
        s = self.model.scale
        boxes = [(win.x, win.y, win.size) for win in wins]
        available = memory.room(self.budget() - plan.base) - self._extra(1, h, w, windows)
        rf = self.model.receptive_field
        period = rf.period if rf.period is not None else (1, 1)
        if plan.footprint.check > available:
            raise InputError(f"checking a new gradient program of {self.model.model_path} needs about "
                             f"{memory.format_size(memory.margin(plan.footprint.check) + plan.base)}, over "
                             f"the memory limit {limit}: raise --max-memory")
        wt, wl, wb, wr = windows_box(boxes, s, lr_size)
        box = memory_crop(inside, (wt, wl, wb, wr), plan.footprint.max_pixels(available), period, CROP_STEP)
        if box is None:
            raise InputError(f"one path step on the LR {size} input needs about {need}, and the memory limit "
                             f"{limit} does not hold even the windows' own pixels: raise --max-memory "
                             "(or analyse fewer windows at once)")
        cone = choose_crop(rf, boxes, s, lr_size, worth_it=1.0) if rf.local else None
        exact = cone is not None and box[0] <= cone.top and box[1] <= cone.left and box[2] >= cone.bottom \
            and box[3] >= cone.right
        margins = [wt - box[0] if box[0] > 0 else None, box[2] - wb if box[2] < h else None,
                   wl - box[1] if box[1] > 0 else None, box[3] - wr if box[3] < w else None]
        context = min((m for m in margins if m is not None), default=None)
        crop = Crop(*box, exact=exact, context=context, reason="memory")
        reach = "" if rf.global_ or rf.reach is None else f"; its receptive field reaches {max(rf.reach)} LR px"
        how = "exact: the box covers the receptive field" if exact else \
            f"approximate: {context} LR px of context around the windows{reach}"
        note = (f"one path step on the LR {size} input needs about {need}, over the memory limit {limit}: "
                f"analysing LR rows {box[0]}–{box[2] - 1}, cols {box[1]}–{box[3] - 1} only ({how})")
        return crop, note

    def usage(self, plan: Plan, meter: memory.PeakMeter, batch: int) -> memory.MemoryUsage:
        """What the run of `plan` (at `batch`) measured, against what was predicted."""
        measured = meter.peak
        if measured is not None:
            measured -= self.origin  # what was in use before this model's sessions (0 on the CPU)
        planned = plan.footprint is not None
        return memory.MemoryUsage(
            device=self.device, limit=self.budget() if planned else self.model.max_memory,
            baseline=plan.base if planned else None,
            predicted_peak=plan.predicted_peak if plan.batch == batch else None, measured_peak=measured,
            probes=plan.footprint.probes if planned else None)

