"""Reports and sweeps on a Dask distributed cluster: `--cluster local:N` or `--scheduler ADDRESS`.

The cluster is Dask's (PyPI `dask[distributed]`, the optional extra `onnxlam[cluster]`, imported only
here and only when asked for): a LocalCluster on this machine, or any running scheduler (SSH hosts,
SLURM/PBS through dask-jobqueue, Kubernetes, dask-cuda). onnxlam adds no scheduling of its own:

- Work unit: one *group* of a report, the pending windows of one model on one image, exactly as the
  serial report groups them (`report.plan_run`). A worker computes a group with `report.run_group`,
  the same function the serial run calls, so it writes the same case folders the same way (each
  atomically, fingerprint in result.json); resumption is unchanged. The client only collects the
  rows and writes results.csv, results.json and index.html.
- Model affinity: each worker keeps the models it loaded (and so their gradient programs, one per
  input shape) in a process-local cache keyed by model sha256 and model options, at most
  `MODELS_PER_WORKER` of them. The client cuts the groups, in model order, into one contiguous run
  per worker of about equal cost (`assign_workers`) and submits each with `workers=[that worker],
  allow_other_workers=True`: a model's groups go to the worker that loads it, while Dask's work
  stealing may still move queued groups to an idle worker, and a lost worker's groups run elsewhere.
- Faults: a worker that dies mid-task costs that task only: Dask reruns it on another worker
  (`distributed.scheduler.allowed-failures`, 3 by default); a task that raises is retried `RETRIES`
  times. A case that fails deterministically fails inside `run_group` and is recorded as failed, as
  in the serial run; a group whose task is given up is recorded failed by the client (`fail_case`).
  A case folder appears whole or not at all (rename), so a killed worker leaves at most a temporary
  folder, which `report.remove_leftovers` deletes. A task whose client has gone stops before its next
  case (`_abandoned`). Kill the client and rerun: the rerun reuses every case already written.
- GPUs: one worker per GPU: a local cluster gives worker i `CUDA_VISIBLE_DEVICES=<GPU i>`, so each
  worker's default memory budget (`memory.default_budget`) reads its own device; on CPUs each local
  worker's default budget is bounded by its share of the machine (its Dask `memory_limit`).
- Start and stop: a local cluster is started when a report has something to compute (a rerun of a
  finished one starts no workers) and each of its worker processes ends at once when its Worker has
  closed (`dask_setup`), so its fixed cost is Dask's import and the workers' start-up.
- Security: a local cluster listens on 127.0.0.1 only and has no dashboard. A remote scheduler is
  reached as Dask configures it: `tls://` with the certificates of `distributed.comm.tls.*` (or a
  `distributed.security.Security` given to `connect`); a plain `tcp://` scheduler runs whatever any
  peer that can reach it submits.
"""
from __future__ import annotations

import contextlib
import importlib.util
import logging
import math
import os
import sys
import threading
import uuid
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterator, Sequence

from onnxlam.batch.report.target import SCHEMES, Target, parse_target  # noqa: F401 (the cluster's targets)
from onnxlam.core.errors import InputError, OnnxlamError

INSTALL = 'pip install "onnxlam[cluster]"'
RETRIES = 2                # reruns of a task that raised (a lost worker is counted by Dask separately)
MODELS_PER_WORKER = 4      # models a worker keeps (each holds its programs, one per input shape)
WORKER_WAIT = 60.0         # seconds to wait for the first worker of an external scheduler
# How a local cluster runs Dask (both measured on two cores: BENCHMARKS.md, "Cluster: where the time goes"):
# - Dask's own monitors: its defaults wake every process's event loop every 20 ms (the tick) and
#   sample the running task's stack every 10 ms (the profiler, which feeds only the dashboard a local
#   cluster does not have). That took 12% of the CPU from the cases; at these settings 1%. The
#   nanny's memory check (which restarts a worker at 95% of its limit) still runs every second.
# - glibc's malloc: Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536, and setting it
#   switches off glibc's adaptive mmap threshold, so every array over 128 KiB (each path batch, each
#   gradient) is mapped fresh and its pages faulted in again: 2.5 times the page faults and 3-4% of
#   a case's time. The workers keep glibc's default (onnxlam bounds its memory itself).
DASK_CONFIG = {"distributed.admin.tick.interval": "1s",
               "distributed.worker.profile.enabled": False,
               "distributed.admin.system-monitor.interval": "1s",
               "distributed.worker.memory.monitor-interval": "1s",
               "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}


# ------------------------------------------------------------------------------------------------
# Where the run goes (pure: no Dask needed to validate)
# ------------------------------------------------------------------------------------------------

def _distributed():
    """dask.distributed, or the one-line InputError naming the extra to install."""
    try:
        import distributed
    except ImportError:
        raise InputError(f"--cluster and --scheduler run on Dask distributed, which is not installed: "
                         f"{INSTALL}") from None
    return distributed


# ------------------------------------------------------------------------------------------------
# Local clusters: workers, GPUs, memory (pure functions where possible)
# ------------------------------------------------------------------------------------------------

def visible_gpus(device: str, environ=None, count: int | None = None) -> list[str]:
    """The GPUs local workers are given, one each: none for `--device cpu`; else those
    CUDA_VISIBLE_DEVICES lists, or `count` (default: the CUDA runtime's device count, 0 without an
    onnxruntime CUDA provider or a CUDA runtime)."""
    environ = os.environ if environ is None else environ
    if device == "cpu":
        return []
    listed = environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        gpus = []
        for item in (d.strip() for d in listed.split(",")):
            if not item or item == "-1":
                break  # CUDA stops at the first invalid entry too
            gpus.append(item)
        return gpus
    return [str(i) for i in range(_gpu_count() if count is None else count)]


def _gpu_count() -> int:
    import ctypes

    import onnxruntime as ort

    from onnxlam.engine.memory import cuda_runtime
    from onnxlam.engine.runtime import CUDA

    if CUDA not in ort.get_available_providers():
        return 0
    lib = cuda_runtime()
    n = ctypes.c_int(0)
    if lib is None or lib.cudaGetDeviceCount(ctypes.byref(n)) != 0:
        return 0
    return n.value


def worker_environments(workers: int, gpus: Sequence[str], environ=None) -> list[dict[str, str]]:
    """The environment of each local worker process: one onnxruntime thread (ONNXLAM_THREADS, unless
    set already) and, with GPUs, worker i alone on GPU i. More workers than GPUs is an InputError: two
    workers on one device would each take its free memory as their budget."""
    environ = os.environ if environ is None else environ
    if gpus and workers > len(gpus):
        raise InputError(f"--cluster local:{workers}: onnxlam runs one worker per GPU and this machine shows "
                         f"{len(gpus)} ({', '.join(gpus)}); use --cluster local:{len(gpus)}, or --device cpu "
                         "for CPU workers")
    envs = []
    for i in range(workers):
        env = {"ONNXLAM_THREADS": environ.get("ONNXLAM_THREADS") or "1"}
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[i]
        envs.append(env)
    return envs


def worker_budget(max_memory, memory_limit: int | None, device: str):
    """A worker's `--max-memory`: as given (it is per worker); else, on the CPU, the safe fraction of its
    Dask memory_limit (its share of the host, which Dask enforces by restarting it at 95%); on CUDA
    None: the Analyzer takes the safe fraction of its own device's free memory."""
    from onnxlam.engine.memory import SAFE_FRACTION

    if max_memory is not None:
        return max_memory
    if device == "cpu" and memory_limit:
        return int(SAFE_FRACTION * memory_limit)
    return None


def start_local_cluster(workers: int, device: str = "auto"):
    """A Dask cluster of `workers` single-threaded worker processes (each under a nanny that restarts it
    when it dies), scheduler and workers listening on 127.0.0.1 only, no dashboard."""
    _distributed()
    import dask
    from distributed import Nanny, Scheduler, SpecCluster
    from distributed.system import MEMORY_LIMIT

    envs = worker_environments(workers, visible_gpus(device))
    scheduler = {"cls": Scheduler, "options": {"host": "127.0.0.1", "dashboard": False,
                                               "dashboard_address": None}}
    specs = {i: {"cls": Nanny, "options": {"nthreads": 1, "host": "127.0.0.1", "dashboard": False,
                                           "memory_limit": MEMORY_LIMIT // workers, "env": env,
                                           "silence_logs": logging.ERROR, "preload": [__name__]}}
             for i, env in enumerate(envs)}
    with dask.config.set(DASK_CONFIG):  # read as the scheduler and the nannies start; each nanny hands it on
        return SpecCluster(workers=specs, scheduler=scheduler, silence_logs=logging.ERROR, name="onnxlam")


def dask_setup(worker) -> None:
    """Dask's preload hook, run in each local worker process as it starts (`start_local_cluster` names
    this module as its workers' preload): a worker process whose Worker has closed ends with
    `os._exit`, skipping the interpreter's teardown of every module and session it loaded, which took
    0.3-0.5 s and which the cluster's stop waits for (an empty cluster's stop: 0.35 s, then 0.04 s).
    Any other ending (the Worker not closed cleanly) exits the normal way."""
    import atexit

    atexit.register(_exit_if_closed, worker)  # handlers registered after this one still run before it


def _exit_if_closed(worker) -> None:
    from distributed.core import Status

    if worker.status != Status.closed:
        return
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(0)


@contextlib.contextmanager
def connect(target: Target, device: str = "auto", security=None, wait: float = WORKER_WAIT) -> Iterator:
    """A Dask Client on `target` (a local cluster is started, and stopped at the end), with at least one
    worker. InputError when the scheduler cannot be reached or has no worker within `wait` seconds."""
    _distributed()
    from distributed import Client

    cluster = None
    try:
        if target.local:
            cluster = start_local_cluster(target.workers, device)
            client = Client(cluster)
        else:
            kwargs = {"security": security} if security is not None else {}
            where = target.address or target.scheduler_file
            try:
                client = Client(target.address, scheduler_file=target.scheduler_file, **kwargs)
            except (OSError, TimeoutError, ValueError) as exc:
                detail = " ".join(str(exc).split()) or type(exc).__name__
                raise InputError(f"cannot reach the Dask scheduler {where}: {detail}") from None
    except BaseException:
        if cluster is not None:
            cluster.close()
        raise
    try:
        if not target.local:
            try:
                client.wait_for_workers(1, timeout=wait)
            except TimeoutError:
                raise InputError(f"the Dask scheduler {where} has no worker (waited {wait:g} s): start "
                                 f"`dask worker {target.address or '--scheduler-file ' + where}`") from None
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def assign_workers(costs: Sequence[tuple[str, float]], workers: Sequence[str]) -> list[str]:
    """The preferred worker of each group, given (model, cost) per group in submission order.

    The groups are cut, in order, into one contiguous run per worker of about total/len(workers) cost
    each: the serial plan keeps a model's groups together, so a model goes to as few workers as an
    even load allows (one, when there are more models than workers) and each of them builds its
    programs once.
    """
    if not workers:
        raise ValueError("no worker")
    total = float(sum(c for _, c in costs)) or 1.0
    share = total / len(workers)
    done, chosen = 0.0, []
    for _, cost in costs:
        chosen.append(workers[min(len(workers) - 1, int(done / share + 1e-9))])  # where the group starts
        done += cost
    return chosen


def for_workers(config):
    """The report config with file paths made absolute: an external scheduler's workers do not run in
    this folder. (Collection names stay names; the client resolves them to files.)"""
    def absolute(item: str) -> str:
        return str(Path(item).expanduser().absolute()) if Path(item).expanduser().exists() else item

    return replace(config, models=tuple(map(absolute, config.models)), images=tuple(map(absolute, config.images)),
                   out=Path(config.out).expanduser().absolute())


# ------------------------------------------------------------------------------------------------
# The worker side: a process-local cache of models, and the tasks
# ------------------------------------------------------------------------------------------------

_ANALYZERS: OrderedDict = OrderedDict()  # key -> (report.Models, lock): this process's loaded models
_CACHE_LOCK = threading.Lock()


def _memory_limit() -> int | None:
    try:
        from distributed import get_worker

        return get_worker().memory_manager.memory_limit
    except Exception:  # not in a Dask worker (a test calling the task directly)
        return None


@contextlib.contextmanager
def _session(sha256: str, path: str, options) -> Iterator:
    """This worker's `report.Models` for the model (sha256) under `options`, held exclusively while
    in use (a worker with several threads runs one group of a model at a time)."""
    from onnxlam.batch.report.run import Models
    from onnxlam.engine.runtime import resolve_device

    budget = worker_budget(options.max_memory, _memory_limit(), resolve_device(options.device))
    options = replace(options, max_memory=budget)
    key = (sha256, options.device, options.value_range, options.bgr, options.batch_size, options.max_memory)
    with _CACHE_LOCK:
        entry = _ANALYZERS.pop(key, None)
        if entry is None:
            entry = (Models(options, lambda _model, p=path: p), threading.Lock())
        _ANALYZERS[key] = entry  # most recently used last
        while len(_ANALYZERS) > MODELS_PER_WORKER:
            _ANALYZERS.popitem(last=False)[1][0].close()
    analyzers, lock = entry
    with lock:
        yield analyzers


def _abandoned() -> bool:
    """Whether this task's result is no longer wanted (its client went away): the worker then marks the
    running task cancelled; the task stops before its next case. False outside a Dask worker."""
    try:
        from distributed import get_worker
        from distributed.worker import thread_state

        task = get_worker().state.tasks.get(thread_state.key)
        return task is None or task.state in ("cancelled", "released", "forgotten")
    except Exception:
        return False


def report_task(rows, fingerprints: dict, config, out: str, model_path: str, sha256: str,
                reraise_unexpected: bool = False) -> list:
    """A worker's part of a report: one group (the pending windows of one model and method on one
    image) computed and written by `report.run_group`; returns the cases' rows for the client."""
    from onnxlam.batch.report.run import ReportListener, run_group

    done = []
    with _session(sha256, model_path, config.options) as models:
        for row in run_group(rows, fingerprints, models, config, Path(out), ReportListener(),
                             reraise_unexpected, 1, len(rows)):
            done.append(row)
            if _abandoned():
                break
    return done


def sweep_task(model_path: str, sha256: str, options, image: str, windows, with_sr: bool):
    """A worker's part of a sweep: DI of some grid windows (whole colours) (and the SR image, for the first part)."""
    from onnxlam.methods.base import windows_of
    from onnxlam.methods.lam.run import run_windows
    from onnxlam.methods.registry import DEFAULT, method

    with _session(sha256, model_path, options) as models:
        model = models.get(model_path, method(DEFAULT), image)
        results = run_windows(model, image, windows_of(windows, options.size), options)
    return [r.di for r in results], (results[0].sr_image if with_sr else None)


# ------------------------------------------------------------------------------------------------
# The client side
# ------------------------------------------------------------------------------------------------

class ClusterExecutor:
    """`run_report(..., executor=ClusterExecutor(target))`: the pending groups computed on Dask workers.

    Use as a context manager: `with ClusterExecutor(target) as ex: run_report(config, executor=ex)`.
    A scheduler is reached on entry, before the report writes anything, so that an unreachable one is
    an error with nothing written; a local cluster is started when there is something to compute (a
    rerun of a finished report starts no workers). `client`: a Dask Client already connected (then
    `target` may be None and the client is not closed).
    """

    def __init__(self, target: Target | None, device: str = "auto", client=None, security=None,
                 notify: Callable[[str], None] | None = None, connected: Callable[[int], None] | None = None):
        self.target, self.device, self.security = target, device, security
        self.client = client
        self.notify = notify or (lambda message: None)
        self.connected = connected or (lambda workers: None)  # told the worker count once reached or started
        self._stack: contextlib.ExitStack | None = None
        self._entered = False

    def __enter__(self) -> "ClusterExecutor":
        self._entered = True
        if self.target is None or not self.target.local:
            self._connect()
        else:  # what would stop the local cluster from starting is said now, before anything is written
            if importlib.util.find_spec("distributed") is None:
                _distributed()
            worker_environments(self.target.workers, visible_gpus(self.device))
        return self

    def __exit__(self, *exc) -> None:
        self._entered = False
        if self._stack is not None:
            self._stack.close()
            self.client = self._stack = None

    def _connect(self):
        """The Client, connected (or the local cluster started) on first need; closed by __exit__."""
        if self.client is None:
            self._stack = contextlib.ExitStack()
            self.client = self._stack.enter_context(connect(self.target, self.device, self.security))
            self.connected(len(self.client.scheduler_info(n_workers=-1)["workers"]))
        return self.client

    @property
    def started(self) -> bool:
        """Whether a scheduler was reached or a local cluster started (a finished report's rerun: no)."""
        return self.client is not None

    def workers(self) -> list[str]:
        return sorted(self._connect().scheduler_info(n_workers=-1)["workers"])

    def __call__(self, pending, listener, resolve_model, reraise_unexpected: bool) -> None:
        from onnxlam.batch.report.aggregates import AggregateWriter
        from onnxlam.batch.report.run import fail_case
        from onnxlam.batch.report.store import remove_leftovers

        if not self._entered:
            with self:
                return self(pending, listener, resolve_model, reraise_unexpected)
        if not pending.groups:  # everything was reused: nothing to start
            return
        from distributed import as_completed

        report = pending.report
        out = Path(report.out).absolute()
        resolved, hashes = {}, {}
        for g in pending.groups:
            case = report.rows[g[0]].case
            if case.model not in resolved:
                resolved[case.model] = str(Path(resolve_model(case.model)).absolute())
                hashes[case.model] = pending.fingerprints[case].model_sha256
        workers = self.workers()
        where = assign_workers([(report.rows[g[0]].case.model, len(g)) for g in pending.groups], workers)
        futures = {}
        for group, worker in zip(pending.groups, where):
            rows = [report.rows[i] for i in group]
            first = rows[0].case
            key = f"onnxlam-{Path(first.model).stem}-{Path(first.image).stem}-{uuid.uuid4().hex[:12]}"
            future = self.client.submit(
                report_task, rows, {r.case: pending.fingerprints[r.case] for r in rows}, report.config, str(out),
                resolved[first.model], hashes[first.model], reraise_unexpected,
                key=key, workers=[worker],
                allow_other_workers=True, retries=RETRIES, pure=False)
            futures[future] = group
        aggregates = AggregateWriter()
        try:
            for future in as_completed(futures):
                group = futures.pop(future)
                try:
                    rows = future.result()
                except (KeyboardInterrupt, SystemExit):
                    raise
                except Exception as exc:
                    if reraise_unexpected and not isinstance(exc, OnnxlamError) \
                            and type(exc).__name__ != "KilledWorker":
                        raise
                    message = " ".join(f"the cluster gave up on this group: {type(exc).__name__}: {exc}".split())
                    self.notify(message)
                    rows = [fail_case(report.rows[i], pending.fingerprints[report.rows[i].case], out, message)
                            for i in group]
                if len(rows) < len(group):  # the task stopped early (it judged its client gone): say so
                    rows = list(rows) + [fail_case(report.rows[i], pending.fingerprints[report.rows[i].case], out,
                                                   "its worker stopped before this case; rerun to compute it")
                                         for i in group[len(rows):]]
                for i, row in zip(group, rows):
                    report.rows[i] = row
                    report.computed += row.status == "ok"
                    listener.case_finished(row)
                aggregates.maybe(report)  # not per case: 10,000 rows cost a rewrite
        finally:
            if futures:  # interrupted: stop what is queued (a running group stops at its next case)
                self.client.cancel(list(futures))
        aggregates.now(report)
        remove_leftovers(out)  # the temporary folder of a case whose worker was killed while writing it


def run_report_on_cluster(config, target: Target | None = None, listener=None, resolve_model=None,
                          reraise_unexpected: bool = False, client=None, security=None):
    """`report.run_report` on a Dask cluster: `target` (default: the config's cluster/scheduler) or a
    connected `client`. The notebook form of `onnxlam report … --cluster/--scheduler`."""
    from onnxlam.batch.report.run import run_report

    target = target or parse_target(config.cluster, config.scheduler)
    if target is not None and not target.local:
        config = for_workers(config)
    with ClusterExecutor(target, config.options.device, client=client, security=security) as executor:
        return run_report(config, listener, resolve_model, reraise_unexpected, executor=executor)


def chunk_windows(count: int, workers: int, per_program: int | None = None) -> int:
    """Windows (or colours) per sweep task: a multiple of the seeds one program takes (`sharing.MAX_WINDOWS`), so
    the tasks' programs are the serial sweep's, and about four tasks per worker, for balance and so
    that a lost worker costs little."""
    from onnxlam.methods.lam.sharing import MAX_WINDOWS

    k = per_program or MAX_WINDOWS
    per = math.ceil(count / max(1, 4 * workers))
    return max(k, math.ceil(per / k) * k)


def run_sweep_on_cluster(model: str, image: str, stride: int | None, options, target: Target | None = None,
                         client=None, security=None, progress: Callable[[int, int], None] | None = None,
                         hard: int | None = None):
    """`sweep.run_sweep` with the windows (the grid's, or the `hard` hardest) split into parts (whole
    colours) over the workers; the same Sweep (DI and SR image) as the serial sweep. `options`: a
    `report.LamOptions`."""
    import numpy as np

    from onnxlam.batch.sweep import make_sweep, sweep_windows
    from onnxlam.methods.lam.analyzer import Analyzer
    from onnxlam.methods.lam.sharing import plan_sharing

    analyzer = Analyzer(model, device="cpu", value_range=options.value_range, bgr=options.bgr)
    xs, ys, windows = sweep_windows(analyzer, image, stride, options.size, options.lr, hard)
    x, _ = analyzer.prepare(image, options.lr)
    sharing = plan_sharing(analyzer, windows, options, x.shape[1:])
    # A task takes whole colours, so that its windows still share passes as in the serial sweep.
    units = sharing.classes if sharing.used else [[i] for i in range(len(windows))]
    model_path, image_path = str(Path(model).absolute()), str(Path(image).absolute())
    with ClusterExecutor(target, options.device, client=client, security=security) as executor:
        workers = executor.workers()
        per = chunk_windows(len(units), len(workers))
        parts = [[i for unit in units[k:k + per] for i in unit] for k in range(0, len(units), per)]
        where = assign_workers([(model_path, len(p)) for p in parts], workers)
        futures = {executor.client.submit(sweep_task, model_path, analyzer.info.sha256, options, image_path,
                                          [windows[i] for i in part], n == 0,
                                          key=f"onnxlam-sweep-{n}-{uuid.uuid4().hex[:12]}",
                                          workers=[w], allow_other_workers=True, retries=RETRIES, pure=False): n
                   for n, (part, w) in enumerate(zip(parts, where))}
        from distributed import as_completed

        di, sr, done = np.zeros(len(windows)), None, 0
        try:
            for future in as_completed(futures):
                n = futures[future]
                part_di, image_sr = future.result()
                di[parts[n]] = part_di
                sr = image_sr if n == 0 else sr
                done += len(parts[n])
                if progress:
                    progress(done, len(windows))
        except BaseException:
            executor.client.cancel(list(futures))
            raise
    return make_sweep(xs, ys, di, options.size, stride, analyzer.scale, sr, sharing, hard is not None)
