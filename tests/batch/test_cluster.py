"""Reports and sweeps on Dask (`--cluster local:N`, `--scheduler`): the same results as the serial run,
a worker killed mid-run, resumption, bad targets. Every socket is on 127.0.0.1."""
from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.clitools import PHOTO, REPO, run_cli
from onnxlam.batch import cluster
from onnxlam.core.errors import InputError

import distributed  # noqa: E402  (the `cluster` extra, part of the `test` extra)

pytestmark = pytest.mark.integration

DASK = Path(sys.executable).with_name("dask")
FOLD = 6
WINDOWS = ("--window", 8, 8, "--window", 30, 20)
# the result.json entries that say how long or how much memory a run took, not what it computed
RUN_FACTS = {"seconds", "group", "memory", "provider", "batch_size"}


@pytest.fixture(scope="module")
def inputs(inputs):
    """tests/batch/conftest.py's folder with a third image."""
    Image.open(PHOTO).crop((200, 100, 264, 164)).save(inputs / "images" / "three.png")
    return inputs


def _args(inputs: Path, out: Path) -> list:
    return ["report", "--model", inputs / "a.onnx", "--model", inputs / "b.onnx", "--image", inputs / "images",
            *WINDOWS, "--fold", FOLD, "--out", out]


@pytest.fixture(scope="module")
def serial(inputs, tmp_path_factory):
    """The reference: the same report run in-process (2 models × 3 images × 2 windows)."""
    out = tmp_path_factory.mktemp("serial") / "rep"
    r = run_cli(*_args(inputs, out), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["run"]["computed"] == 12
    return out


def _without_timings(page: str) -> str:
    page = re.sub(r"(first )?started [^<]*</p>", "started</p>", page)  # when, and whether it was resumed
    # the seconds column: the number cell just before the status cell
    return re.sub(r'<td class=n data-v="[^"]*">[^<]*</td>(<td class="status-)', r"\1", page)


def assert_same_report(a: Path, b: Path, run_facts=RUN_FACTS) -> None:
    """Reports `a` and `b` hold the same rows (DI and Gini to 1e-5), case files and page, timings aside."""
    rows_a, rows_b = (list(csv.DictReader((d / "results.csv").open())) for d in (a, b))
    assert len(rows_a) == len(rows_b) == 12
    for ra, rb in zip(rows_a, rows_b):
        for k in ra:
            if k in ("di", "gini"):
                assert float(rb[k]) == pytest.approx(float(ra[k]), rel=1e-5), k
            elif k != "seconds":
                assert ra[k] == rb[k], k
    ja, jb = (json.loads((d / "results.json").read_text()) for d in (a, b))
    assert ja["options"] == jb["options"]
    assert [ja["run"][k] for k in ("cases", "failed", "pending")] == [jb["run"][k] for k in ("cases", "failed", "pending")]
    for sa, sb in zip(ja["summary"], jb["summary"]):
        assert sa.keys() == sb.keys() and sa["cases"] == sb["cases"] and sa["failures"] == sb["failures"]
        assert sb["di_mean"] == pytest.approx(sa["di_mean"], rel=1e-5)
    folders = sorted(p.name for p in (a / "cases").iterdir())
    assert folders == sorted(p.name for p in (b / "cases").iterdir()) and len(folders) == 12  # no leftovers
    for name in folders:
        fa, fb = a / "cases" / name, b / "cases" / name
        assert sorted(p.name for p in fa.iterdir()) == sorted(p.name for p in fb.iterdir())
        for array in ("attribution.npy", "gradient.npy"):
            np.testing.assert_allclose(np.load(fb / array), np.load(fa / array), rtol=1e-5, atol=1e-7)
        da, db = (json.loads((f / "result.json").read_text()) for f in (fa, fb))
        assert da.keys() == db.keys()
        for k in da:
            if k in ("di", "gini"):
                assert db[k] == pytest.approx(da[k], rel=1e-5)
            elif k == "completeness":
                assert db[k] == pytest.approx(da[k], rel=1e-4, abs=1e-6)
            elif k not in run_facts:
                assert da[k] == db[k], (name, k)
        for picture in (p.name for p in fa.glob("*.png")):
            pa, pb = (np.asarray(Image.open(f / picture), np.int16) for f in (fa, fb))
            assert pa.shape == pb.shape and np.abs(pa - pb).max() <= 1, (name, picture)
    assert _without_timings((a / "index.html").read_text()) == _without_timings((b / "index.html").read_text())


def test_local_cluster_equals_the_serial_report(inputs, serial, tmp_path):
    out = tmp_path / "rep"
    r = run_cli(*_args(inputs, out), "--cluster", "local:2", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["run"] == {"cases": 12, "computed": 12, "reused": 0, "failed": 0, "pending": 0}
    assert_same_report(serial, out)
    # The serial report's fingerprints: a rerun on the cluster reuses all of it.
    r = run_cli(*_args(inputs, serial), "--cluster", "local:2", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["run"]["reused"] == 12, r.stderr


def test_local_cluster_runs_dask_monitors_quietly():
    """The local cluster's scheduler, nannies and workers tick every second, not every 20 ms, and the
    workers do not sample their tasks' stacks: at Dask's defaults these took 12% of two cores. The
    workers keep glibc's malloc as it is (Dask's nanny would set MALLOC_TRIM_THRESHOLD_, which doubles
    the page faults) and the nanny's other settings (one OpenMP thread)."""
    def intervals(dask_worker):
        pcs = dask_worker.periodic_callbacks
        return pcs["tick"].callback_time, "profile" in pcs, pcs["monitor"].callback_time

    import dask

    before = dask.config.get("distributed.admin.tick.interval")
    malloc = os.environ.get("MALLOC_TRIM_THRESHOLD_")  # read first: a nanny sets its variables here, then spawns
    with cluster.start_local_cluster(2, "cpu") as local, distributed.Client(local) as client:
        assert set(client.run(intervals).values()) == {(1000, False, 1000)}
        assert client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.periodic_callbacks["tick"].callback_time) \
            == 1000
        nannies = list(local.workers.values())
        assert [n.periodic_callbacks["memory_monitor"].callback_time for n in nannies] == [1000, 1000]
        assert [n.periodic_callbacks["tick"].callback_time for n in nannies] == [1000, 1000]
        preloads = client.run(lambda dask_worker: [p.name for p in dask_worker.preloads])
        assert set(map(tuple, preloads.values())) == {("onnxlam.batch.cluster",)}, preloads  # dask_setup
        environ = client.run(lambda: (os.environ.get("MALLOC_TRIM_THRESHOLD_"), os.environ.get("OMP_NUM_THREADS")))
        assert set(environ.values()) == {(malloc, "1")}, environ
    assert dask.config.get("distributed.admin.tick.interval") == before  # this process's config untouched


def test_a_closed_worker_process_exits_at_once_and_only_then(monkeypatch):
    """`dask_setup`'s exit hook ends the process (os._exit(0), after flushing) only for a Worker that
    closed cleanly; a worker in any other state exits the normal way."""
    from distributed.core import Status

    class Ended(Exception):
        pass

    def fake_exit(code):
        raise Ended(code)

    monkeypatch.setattr(os, "_exit", fake_exit)
    monkeypatch.setattr("logging.shutdown", lambda: None)  # this process's logging stays open
    worker = type("W", (), {})()
    for status in (Status.running, Status.closing, Status.failed):
        worker.status = status
        cluster._exit_if_closed(worker)  # returns: the interpreter finishes as usual
    worker.status = Status.closed
    with pytest.raises(Ended) as ended:
        cluster._exit_if_closed(worker)
    assert ended.value.args == (0,)


def readme_worker_environment() -> dict[str, str]:
    """The variables the README tells users to export for workers they start themselves."""
    text = (REPO / "README.md").read_text()
    block = re.search(r"```sh\n\s*(export DASK_DISTRIBUTED__.*?)```", text, re.S)
    assert block, "the README's export block for external workers is gone"
    words = shlex.split(block.group(1).replace("\\\n", " "))
    assert words[0] == "export"
    return dict(w.split("=", 1) for w in words[1:])


def test_readme_worker_settings_are_the_local_clusters():
    """The README's exports, read by Dask in a fresh process, give the tick, the profiler and the
    nanny's malloc setting that `--cluster local:N` runs with."""
    keys = ("distributed.admin.tick.interval", "distributed.worker.profile.enabled",
            "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_")
    code = "import json, dask, distributed; print(json.dumps([dask.config.get(k, 'unset') for k in %r]))" % (keys,)
    r = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, **readme_worker_environment()),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == [cluster.DASK_CONFIG[k] for k in keys] == ["1s", False, None]


# ------------------------------------------------------------------------------------------------
# An external cluster: `dask scheduler` and two `dask worker` processes on 127.0.0.1
# ------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def external_cluster(tmp: Path, workers: int = 2):
    """A scheduler and `workers` nanny-less workers (a SIGKILL ends a worker for good), all on loopback,
    stopped at the end whatever happens. Yields (scheduler file, worker processes)."""
    env = dict(os.environ, PYTHONPATH=str(REPO), ONNXLAM_THREADS="1", **readme_worker_environment())
    file = tmp / "scheduler.json"
    procs: list[subprocess.Popen] = []
    logs = []

    def start(*args) -> subprocess.Popen:
        log = open(tmp / f"dask-{len(procs)}.log", "w")
        logs.append(log)
        procs.append(subprocess.Popen([str(DASK), *args], env=env, stdout=log, stderr=subprocess.STDOUT,
                                      cwd=tmp))
        return procs[-1]

    try:
        start("scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard", "--scheduler-file", str(file))
        deadline = time.monotonic() + 60
        while not file.is_file() and time.monotonic() < deadline:
            assert procs[0].poll() is None, (tmp / "dask-0.log").read_text()
            time.sleep(0.1)
        assert file.is_file(), "the scheduler did not start"
        assert json.loads(file.read_text())["address"].startswith("tcp://127.0.0.1:")
        for _ in range(workers):
            start("worker", "--scheduler-file", str(file), "--host", "127.0.0.1", "--nthreads", "1",
                  "--no-nanny", "--no-dashboard", "--death-timeout", "60")
        with distributed.Client(scheduler_file=str(file), timeout=30) as client:
            client.wait_for_workers(workers, timeout=60)
            quiet = client.run(lambda dask_worker: (dask_worker.periodic_callbacks["tick"].callback_time,
                                                    "profile" in dask_worker.periodic_callbacks))
            assert set(quiet.values()) == {(1000, False)}, quiet
        yield file, procs[1:]
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(15)
        for log in logs:
            log.close()


def _mtimes(out: Path) -> dict:
    return {p.name: (p / "result.json").stat().st_mtime_ns for p in (out / "cases").iterdir()}


def test_external_cluster_survives_a_killed_worker_and_resumes(inputs, serial, tmp_path):
    with external_cluster(tmp_path) as (file, workers):
        # 1. the report completes and equals the serial one
        out = tmp_path / "first"
        r = run_cli(*_args(inputs, out), "--scheduler", file, "--json", timeout=300)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["run"]["computed"] == 12
        assert_same_report(serial, out)

        # 2. one worker SIGKILLed while it holds a task of the run: still complete and equal
        out = tmp_path / "killed"
        env = dict(os.environ, PYTHONPATH=str(REPO))
        proc = subprocess.Popen([sys.executable, "-m", "onnxlam", *map(str, _args(inputs, out)), "--scheduler",
                                 str(file), "--json"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        try:
            with distributed.Client(scheduler_file=str(file), timeout=30) as client:
                ours = {p.pid: p for p in workers}
                pids = client.run(os.getpid)  # worker address -> process id
                assert sorted(pids.values()) == sorted(ours)
                victim, deadline = None, time.monotonic() + 120
                while victim is None and time.monotonic() < deadline and proc.poll() is None:
                    for address, tasks in client.processing().items():
                        if tasks and any(t.startswith("onnxlam-") for t in tasks) and address in pids:
                            victim = ours[pids[address]]
                            break
                    time.sleep(0.02)
                assert victim is not None, "no worker was seen busy with the run"
                victim.send_signal(signal.SIGKILL)
                victim.wait(15)
            stdout, stderr = proc.communicate(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(15)
        assert proc.returncode == 0, stderr
        assert json.loads(stdout)["run"] == {"cases": 12, "computed": 12, "reused": 0, "failed": 0, "pending": 0}
        assert_same_report(serial, out)  # none lost, duplicated or half-written (no temporary folder left)

        # 3. a rerun resumes with nothing recomputed (on the one worker left)
        before = _mtimes(out)
        r = run_cli(*_args(inputs, out), "--scheduler", file, "--json", timeout=300)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["run"] == {"cases": 12, "computed": 0, "reused": 12, "failed": 0, "pending": 0}
        assert _mtimes(out) == before


@pytest.mark.slow  # two more cluster runs; resumption itself is covered by the external cluster's rerun
def test_a_killed_client_resumes(inputs, serial, tmp_path):
    """SIGKILL the client of a local cluster once a case is written: its workers go with it (they watch
    their parent), every visible case is whole, and the rerun computes only the rest."""
    out = tmp_path / "rep"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "onnxlam", *map(str, _args(inputs, out)), "--cluster", "local:2"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            cases = out / "cases"
            if cases.is_dir() and any((f / "result.json").is_file() for f in cases.iterdir()):
                break
            time.sleep(0.01)
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(30)
    time.sleep(1)  # the workers notice their parent is gone and stop
    finished = {p.name: (p / "result.json").stat().st_mtime_ns for p in (out / "cases").iterdir()
                if not p.name.startswith(".") and (p / "result.json").is_file()}
    assert 1 <= len(finished) < 12
    r = run_cli(*_args(inputs, out), "--cluster", "local:2", "--json")
    assert r.returncode == 0, r.stderr
    run = json.loads(r.stdout)["run"]
    assert run["reused"] >= len(finished) and run["computed"] == 12 - run["reused"] and run["pending"] == 0
    for name, mtime in finished.items():  # reused, not rewritten
        assert (out / "cases" / name / "result.json").stat().st_mtime_ns == mtime
    # A resumed group holds only its image's pending windows, so its (exact) crop box may be smaller than
    # the serial run's, as in a serial resume; the maps are the same.
    assert_same_report(serial, out, RUN_FACTS | {"crop"})


# ------------------------------------------------------------------------------------------------
# Sweeps
# ------------------------------------------------------------------------------------------------

def test_a_finished_report_starts_no_local_cluster(inputs, serial, tmp_path, monkeypatch):
    """A rerun with every case reused starts no workers (they would cost seconds for nothing); a
    rerun with one case gone starts them and computes that case alone."""
    import shutil

    out = tmp_path / "rep"
    shutil.copytree(serial, out)
    started = []
    real = cluster.start_local_cluster
    monkeypatch.setattr(cluster, "start_local_cluster", lambda *a, **k: started.append(a) or real(*a, **k))
    r = _invoke(*_args(inputs, out), "--cluster", "local:2", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["run"]["reused"] == 12 and started == []
    assert "running on" not in r.stderr and "nothing to compute: a local Dask cluster" in r.stderr, r.stderr
    shutil.rmtree(next((out / "cases").iterdir()))
    r = _invoke(*_args(inputs, out), "--cluster", "local:2", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["run"] == {"cases": 12, "computed": 1, "reused": 11, "failed": 0, "pending": 0}
    assert started == [(2, "auto")]
    assert "running on a local Dask cluster on 127.0.0.1: 2 workers" in r.stderr and "nothing" not in r.stderr
    assert_same_report(serial, out, RUN_FACTS | {"crop"})  # computed alone, its crop holds its own window only


def test_sweep_on_a_local_cluster_equals_the_serial_sweep(inputs, tmp_path):
    image = inputs / "images" / "one.png"
    args = ["sweep", inputs / "a.onnx", image, "--stride", 8, "--size", 16, "--fold", 4]
    r = run_cli(*args, "--out", tmp_path / "serial")
    assert r.returncode == 0, r.stderr
    r = run_cli(*args, "--out", tmp_path / "cluster", "--cluster", "local:2", "--json")
    assert r.returncode == 0, r.stderr
    a, b = tmp_path / "serial", tmp_path / "cluster"
    da, db = np.load(a / "sweep.npy"), np.load(b / "sweep.npy")
    assert da.shape == db.shape == (6, 6)  # 36 windows: five tasks of up to 8 over two workers
    np.testing.assert_allclose(db, da, rtol=1e-5)
    ja, jb = (json.loads((d / "sweep.json").read_text()) for d in (a, b))
    assert ja.keys() == jb.keys() and json.loads(r.stdout).keys() == ja.keys()
    assert jb.pop("sharing") == ja.pop("sharing")  # the cluster's tasks take whole colours of one plan
    assert jb.pop("kind") == ja.pop("kind") == "grid"
    wa, wb = ja.pop("windows"), jb.pop("windows")
    assert [(w["x"], w["y"], w["size"]) for w in wb] == [(w["x"], w["y"], w["size"]) for w in wa]
    np.testing.assert_allclose([w["di"] for w in wb], [w["di"] for w in wa], rtol=1e-5)
    for k in ja:
        np.testing.assert_allclose(np.asarray(jb[k], float), np.asarray(ja[k], float), rtol=1e-5, err_msg=k)
    pa, pb = (np.asarray(Image.open(d / "sweep.png"), np.int16) for d in (a, b))
    assert pa.shape == pb.shape and np.abs(pa - pb).max() <= 1


# ------------------------------------------------------------------------------------------------
# Bad targets, the missing extra, and the pure parts
# ------------------------------------------------------------------------------------------------

def _invoke(*args):
    """The command line in this process (a subprocess per bad value would cost seconds each)."""
    from typer.testing import CliRunner

    from onnxlam.cli.app import app

    return CliRunner().invoke(app, [str(a) for a in args])


def _one_error_line(r, needle: str) -> None:
    assert r.exit_code == 2, (r.exit_code, r.output)
    assert r.stderr.lstrip().startswith("error:") and needle in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr


def test_bad_cluster_and_scheduler_values_are_one_error_line(inputs, tmp_path):
    never = tmp_path / "never"
    base = ["report", "--model", inputs / "a.onnx", "--image", inputs / "images" / "one.png", "--window", 8, 8,
            "--fold", 2, "--out", never]
    for extra, needle in [
        (["--cluster", "local:zero"], "--cluster takes local:N"),
        (["--cluster", "local:0"], "1 ≤ N ≤ 1024"),
        (["--scheduler", "http://127.0.0.1:8786"], "is not a scheduler address"),
        (["--scheduler", tmp_path / "none.json"], "no such scheduler file"),
        (["--cluster", "local:2", "--scheduler", "tcp://127.0.0.1:8786"], "not both"),
    ]:
        _one_error_line(_invoke(*base, *extra), needle)
    (tmp_path / "notes.json").write_text("[1, 2]")
    _one_error_line(_invoke(*base, "--scheduler", tmp_path / "notes.json"), "is not a Dask scheduler file")
    # Nothing listens on this port: the connection fails (after Dask's connect timeout), nothing is written.
    import socket

    import dask

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
        _one_error_line(_invoke(*base, "--scheduler", f"tcp://127.0.0.1:{port}"), "cannot reach the Dask scheduler")
    # TOML keys, exclusive too; and the sweep's flags.
    config = tmp_path / "both.toml"
    config.write_text('cluster = "local:2"\nscheduler = "tcp://127.0.0.1:8786"\n')
    _one_error_line(_invoke("report", config, *base[1:]), "not both")
    config.write_text('cluster = 2\n')
    _one_error_line(_invoke("report", config, *base[1:]), "`cluster` has the wrong type")
    _one_error_line(_invoke("sweep", inputs / "a.onnx", inputs / "images" / "one.png", "--stride", 8,
                            "--cluster", "lokal:2", "--out", never), "--cluster takes local:N")
    assert not never.exists()
    # and once through a real process: the exit code and the single stderr line
    r = run_cli(*base, "--cluster", "local:-1")
    assert r.returncode == 2 and r.stderr.startswith("error:") and len(r.stderr.strip().splitlines()) == 1


def test_toml_cluster_keys(tmp_path):
    from onnxlam.batch.report import load_config

    (tmp_path / "sched.json").write_text('{"address": "tls://10.0.0.5:8786"}')
    config = tmp_path / "r.toml"
    config.write_text('scheduler = "sched.json"\n')
    values = load_config(config)
    assert values.scheduler == str(tmp_path / "sched.json")  # from the config's folder
    assert cluster.parse_target(values.cluster, values.scheduler).scheduler_file == str(tmp_path / "sched.json")
    config.write_text('cluster = "local:3"\n')
    assert cluster.parse_target(load_config(config).cluster, None).workers == 3


def test_without_dask_the_error_names_the_extra(inputs, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # `import distributed` now fails
    with pytest.raises(InputError, match=re.escape('pip install "onnxlam[cluster]"')):
        cluster._distributed()
    r = _invoke("report", "--model", inputs / "a.onnx", "--image", inputs / "images" / "one.png", "--window", 8, 8,
                "--cluster", "local:2", "--out", tmp_path / "r")
    _one_error_line(r, 'pip install "onnxlam[cluster]"')
    assert not (tmp_path / "r").exists()


def test_parse_target():
    assert cluster.parse_target(None, None) is None
    assert cluster.parse_target("local:4", None) == cluster.Target(workers=4)
    assert cluster.parse_target(None, "tls://sched.example:8786").address == "tls://sched.example:8786"
    assert cluster.parse_target(None, "tcp://127.0.0.1:8786").address == "tcp://127.0.0.1:8786"
    for bad in ("tcp://", "tcp://a b:1", "tcp://host/path"):
        with pytest.raises(InputError):
            cluster.parse_target(None, bad)


def test_one_worker_per_gpu():
    # CUDA_VISIBLE_DEVICES decides which GPUs there are; CUDA stops at the first invalid entry
    assert cluster.visible_gpus("auto", {"CUDA_VISIBLE_DEVICES": "2,3"}) == ["2", "3"]
    assert cluster.visible_gpus("cuda", {"CUDA_VISIBLE_DEVICES": "1,-1,0"}) == ["1"]
    assert cluster.visible_gpus("auto", {"CUDA_VISIBLE_DEVICES": ""}) == []
    assert cluster.visible_gpus("auto", {}, count=2) == ["0", "1"]
    assert cluster.visible_gpus("cpu", {"CUDA_VISIBLE_DEVICES": "0,1"}) == []
    assert cluster.visible_gpus("auto", {}) == []  # this machine: no GPU
    envs = cluster.worker_environments(2, ["2", "3"], environ={})
    assert envs == [{"ONNXLAM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "2"},
                    {"ONNXLAM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "3"}]
    assert cluster.worker_environments(3, [], environ={"ONNXLAM_THREADS": "2"}) == [{"ONNXLAM_THREADS": "2"}] * 3
    with pytest.raises(InputError, match="one worker per GPU"):
        cluster.worker_environments(3, ["0", "1"], environ={})


def test_worker_budget():
    from onnxlam.engine.memory import SAFE_FRACTION

    assert cluster.worker_budget("3G", 8 << 30, "cpu") == "3G"              # given: per worker
    assert cluster.worker_budget(None, 8 << 30, "cpu") == int(SAFE_FRACTION * (8 << 30))  # its host share
    assert cluster.worker_budget(None, None, "cpu") is None                  # no Dask limit: as serial
    assert cluster.worker_budget(None, 8 << 30, "cuda") is None              # its own GPU decides


def test_groups_of_a_model_go_to_one_worker_when_the_load_allows():
    costs = [("a", 2)] * 3 + [("b", 2)] * 3
    assert cluster.assign_workers(costs, ["w1", "w2"]) == ["w1"] * 3 + ["w2"] * 3
    # one model: its groups split evenly, in order, so each worker builds its programs once
    assert cluster.assign_workers([("a", 8)] * 4, ["w1", "w2"]) == ["w1", "w1", "w2", "w2"]
    # uneven models: the load decides; every worker gets a contiguous run
    where = cluster.assign_workers([("a", 1)] * 6 + [("b", 1)] * 2, ["w1", "w2", "w3", "w4"])
    assert where == ["w1", "w1", "w2", "w2", "w3", "w3", "w4", "w4"]
    assert cluster.assign_workers([("a", 1)], ["w1", "w2", "w3"]) == ["w1"]


def test_sweep_chunks_keep_the_serial_programs():
    assert cluster.chunk_windows(36, 2) == 8
    assert cluster.chunk_windows(1000, 2) == 128 and 128 % 8 == 0
    assert cluster.chunk_windows(3, 8) == 8
