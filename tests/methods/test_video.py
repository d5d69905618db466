"""Video SR LAM (`methods/video/`) against an independent PyTorch video LAM (`torch_reference.reference_video_lam`).

Two tiny video SR nets (tests/video_architectures.py): a sliding-window one (EDVR-style, offset-free alignment weights,
the centre frame restored) and a recurrent one (BasicVSR-style: a flow net, the hidden state warped
with `F.grid_sample`, every frame restored). Both exporters; `lam MODEL FRAME… --frame K` on the
command line; onnx-ad's GridSample against autograd, and its program through the gradient check.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnx_ad
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper
from PIL import Image

from tests import torch_reference as ref
from tests.clitools import run_cli
from tests.video_architectures import LR, T, RecurrentVSR, SlidingVSR, StackedBgr255, build, export
from onnxlam.core.errors import InputError
from onnxlam.graph.video import VideoLayout
from onnxlam.methods.video.analyzer import VideoAnalyzer, analyze_video, frame_files, frame_metrics

pytestmark = pytest.mark.integration

WINDOW, SIZE, FOLD = (8, 10), 12, 6


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    root = tmp_path_factory.mktemp("video")
    sliding, recurrent = build(SlidingVSR), build(RecurrentVSR)
    files = {("sliding", "torchscript"): export(sliding, root / "sliding.onnx", "torchscript"),
             ("recurrent", "torchscript"): export(recurrent, root / "recurrent.onnx", "torchscript"),
             ("recurrent", "dynamo"): export(recurrent, root / "recurrent-dynamo.onnx", "dynamo")}
    return {"sliding": sliding, "recurrent": recurrent, "files": files, "root": root}


@pytest.fixture(scope="module")
def frames():
    return np.random.default_rng(0).uniform(0, 1, (T, 3, LR, LR)).astype(np.float32)


def _hwc(frames):
    return [np.ascontiguousarray(f.transpose(1, 2, 0)) for f in frames]


def _compare(result, reference):
    assert result.maps.shape == (T, LR, LR)
    assert np.abs(result.maps - reference["M"]).max() <= 1e-4
    assert abs(result.di_joint - reference["di_joint"]) <= 0.01
    assert abs(result.di_temporal - reference["di_temporal"]) <= 0.01
    assert np.abs(np.array(result.di_frames) - reference["di_frames"]).max() <= 0.01
    assert np.abs(np.array(result.shares) - reference["shares"]).max() <= 1e-4
    assert abs(sum(result.shares) - 1) < 1e-9


@pytest.mark.parametrize("kind,exporter,frame", [("sliding", "torchscript", None), ("recurrent", "torchscript", 2),
                                                 ("recurrent", "dynamo", 0)])
def test_video_lam_matches_the_torch_reference(nets, frames, kind, exporter, frame):
    # the sliding net is local (reach 4 LR px): a small window runs on its receptive-field crop only
    window, size = ((12, 14), 4) if kind == "sliding" else (WINDOW, SIZE)
    analyzer = VideoAnalyzer(nets["files"][kind, exporter], T, frame, device="cpu")
    result = analyzer.run_video(_hwc(frames), window, size, lr=True, fold=FOLD)
    reference = ref.reference_video_lam(nets[kind], frames, *window, size, frame, fold=FOLD)
    _compare(result, reference)
    assert (result.crop is not None) == (kind == "sliding")  # the recurrent one (GridSample) is global
    assert result.frame == (T // 2 if frame is None else frame)
    assert result.layout == VideoLayout(T, 3, False, "one" if kind == "sliding" else "frames")
    # forward propagation is causal: frames after K hold nothing; the others (all, sliding) something
    seen = T if kind == "sliding" else result.frame + 1
    assert min(result.shares[:seen]) > 0 and not any(result.shares[seen:])
    if seen == 1:  # output frame 0 sees input frame 0 alone: one frame holds everything
        assert result.shares[0] == 1.0 and not result.maps[1:].any()
        assert result.di_temporal == pytest.approx(100.0 / T, abs=1e-3)
    data = result.to_json()
    assert data["frame"] == result.frame and len(data["shares"]) == T and "maps" not in data
    json.dumps(data)


def test_stacked_bgr_255_model_is_normalised_per_frame(nets, frames):
    """A frames-on-channels BGR 0…255 model: the flip and the range apply per frame (a flip of all T·3
    channels would also reverse the frame order, and the maps would not match)."""
    path = nets["root"] / "stacked-bgr.onnx"
    export(StackedBgr255(nets["sliding"]), path, "torchscript", shape=(1, T * 3, LR, LR))
    m = onnx.load(str(path))
    helper.set_model_props(m, {"onnxlam.channel_order": "bgr", "onnxlam.value_range": "255"})
    onnx.save(m, str(path))
    result = analyze_video(path, _hwc(frames), WINDOW, size=SIZE, lr=True, fold=FOLD, device="cpu")
    assert result.layout == VideoLayout(T, 3, True, "one")
    _compare(result, ref.reference_video_lam(nets["sliding"], frames, *WINDOW, SIZE, None, fold=FOLD))
    assert (result.value_range, result.channel_order) == (255.0, "bgr")


def test_frame_metrics_follow_their_definitions():
    rng = np.random.default_rng(3)
    A = rng.normal(size=(4, 3, 5, 6)).astype(np.float32)
    A[2] = 0.0
    A[3] *= 10
    m = frame_metrics(A)
    S = np.abs(A.astype(np.float64).sum(axis=1))
    M = S / (S.max() + 1e-5)
    assert np.abs(m["maps"] - M).max() < 1e-6
    shares = M.sum(axis=(1, 2)) / M.sum()
    assert np.allclose(m["shares"], shares) and m["shares"][2] == 0
    assert m["di_temporal"] == pytest.approx((1 - ref.gini(shares)) * 100)
    assert m["di_frames"][0] == pytest.approx(ref.diffusion_index(ref.abs_normalise(A[0])), abs=1e-6)
    same = frame_metrics(np.repeat(A[:1], 3, axis=0))
    assert same["di_temporal"] == pytest.approx(100.0, abs=1e-4)


def test_layout_errors(nets, zoo):
    recurrent = nets["files"]["recurrent", "dynamo"]  # fixed at T = 3
    with pytest.raises(InputError, match="takes 3 frames"):
        VideoAnalyzer(recurrent, 4, 1)
    with pytest.raises(InputError, match="out of range"):
        VideoAnalyzer(nets["files"]["recurrent", "torchscript"], T, 3)
    with pytest.raises(InputError, match="--frame K"):
        VideoAnalyzer(nets["files"]["recurrent", "torchscript"], T, None)
    with pytest.raises(InputError, match="restores one frame"):
        VideoAnalyzer(nets["files"]["sliding", "torchscript"], T, 0)
    with pytest.raises(InputError, match="takes one image"):
        VideoAnalyzer(zoo.onnx("fsrcnn", "torchscript"), T)


def test_frame_files_sorts_a_folder_by_name_numbers_by_value(tmp_path):
    for name in ("frame10.png", "frame2.png", "frame1.PNG", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in frame_files([tmp_path])] == ["frame1.PNG", "frame2.png", "frame10.png"]
    assert frame_files(["b.png", "a.png"]) == [Path("b.png"), Path("a.png")]  # files: as given
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no images"):
        frame_files([tmp_path / "empty"])


def test_single_image_call_on_a_video_model_says_how_to_give_frames(nets, frames, tmp_path):
    paths = _write_frames(tmp_path / "lr", frames)
    r = run_cli("lam", nets["files"]["sliding", "torchscript"], paths[0], "--lr", "--window", 0, 0, "--fold", 2,
                "--device", "cpu", "--out", tmp_path / "out")
    assert r.returncode == 2 and "--frame K" in r.stderr and "N×T×C×h×w" in r.stderr, r.stderr


# --- GridSample ---------------------------------------------------------------------------------------

def _grid_sample_model(padding, align, shape=(1, 2, 5, 6), grid=(1, 4, 3, 2)):
    node = helper.make_node("GridSample", ["x", "grid"], ["y"], mode="linear", padding_mode=padding,
                            align_corners=align)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape),
                                        helper.make_tensor_value_info("grid", TensorProto.FLOAT, grid)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)])
    m.ir_version = 10
    return onnx.shape_inference.infer_shapes(m, strict_mode=True, data_prop=True)


@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("align", [0, 1])
def test_grid_sample_matches_autograd(padding, align):
    """onnx-ad's own GridSample lowering (values, and reverse gradients w.r.t. image and grid) equals
    PyTorch's `grid_sample` and autograd, with grid points outside the image and on integer pixels."""
    m = _grid_sample_model(padding, align)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 2, 5, 6)).astype(np.float32)
    grid = rng.uniform(-1.3, 1.3, (1, 4, 3, 2)).astype(np.float32)
    grid[0, 1, 1] = [0.2, -0.5] if align else [1 / 6, -0.2]  # an exact pixel centre: the floor's edge case
    seed = rng.normal(size=(1, 2, 4, 3)).astype(np.float32)
    program = onnx_ad.reverse(m, inputs=["x", "grid"], outputs=["y"], layout="onnx")
    program.ir_version = min(program.ir_version, 10)
    session = ort.InferenceSession(program.SerializeToString(), providers=["CPUExecutionProvider"])
    outputs = dict(zip([o.name for o in session.get_outputs()],
                       session.run(None, {"x": x, "grid": grid, "adj_y": seed[..., None]})))
    xt, gt = torch.tensor(x, requires_grad=True), torch.tensor(grid, requires_grad=True)
    y = F.grid_sample(xt, gt, mode="bilinear", padding_mode=padding, align_corners=bool(align))
    (y * torch.tensor(seed)).sum().backward()
    assert np.abs(outputs["y"] - y.detach().numpy()).max() < 1e-5
    assert np.abs(outputs["adj_x"][..., 0] - xt.grad.numpy()).max() < 1e-5
    assert np.abs(outputs["adj_grid"][..., 0] - gt.grad.numpy()).max() < 1e-4


def test_the_recurrent_program_passes_the_gradient_check(nets):
    """onnx-ad lowers GridSample with float Floor and Clip nodes; the node-local check steps inside
    their cells (`gradcheck.in_cell_tangents`) and accepts the correct program."""
    analyzer = VideoAnalyzer(nets["files"]["recurrent", "torchscript"], T, 2, device="cpu", cache=False)
    program = analyzer.build(1, LR, LR, 1)
    ops = {n.op_type for n in program.model.graph.node}
    assert {"Floor", "Clip"} <= ops and program.fd_error <= 1e-3


# --- the command line ---------------------------------------------------------------------------------

def _write_frames(folder, frames):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for t, f in enumerate(frames):
        p = folder / f"frame{t:02d}.png"
        Image.fromarray(np.clip(np.rint(f.transpose(1, 2, 0) * 255), 0, 255).astype(np.uint8)).save(p)
        paths.append(p)
    return paths


def test_cli_frames_and_frame(nets, frames, tmp_path):
    paths = _write_frames(tmp_path / "lr", frames)
    out = tmp_path / "out"
    r = run_cli("lam", nets["files"]["recurrent", "torchscript"], *paths, "--frame", "2", "--lr", "--window",
                *WINDOW, "--size", SIZE, "--fold", FOLD, "--device", "cpu", "--out", out, "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    read = np.stack([np.asarray(Image.open(p), np.float32).transpose(2, 0, 1) / 255 for p in paths])
    reference = ref.reference_video_lam(nets["recurrent"], read, *WINDOW, SIZE, 2, fold=FOLD)
    assert np.abs(np.load(out / "maps.npy") - reference["M"]).max() <= 1e-4
    assert abs(data["di_joint"] - reference["di_joint"]) <= 0.01 and data["frame"] == 2
    assert data["frames"] == [str(p) for p in paths]
    assert {p.name for p in out.iterdir()} == {"maps.npy", "gradient.npy", "sr.png", "strip.png", "result.json"}
    strip = np.asarray(Image.open(out / "strip.png"))
    assert strip.shape[1] >= (T + 1) * 2 * LR  # the window frame and one blend per input frame


def test_cli_folder_of_hr_frames(nets, tmp_path):
    """A folder (sorted by name) of HR frames, each downsampled ×2 per spec §1, sliding-window model."""
    hr = np.random.default_rng(5).integers(0, 256, (T, 2 * LR, 2 * LR, 3), dtype=np.uint8)
    folder = tmp_path / "hr"
    folder.mkdir()
    for t in reversed(range(T)):  # written out of order: the folder form sorts by name
        Image.fromarray(hr[t]).save(folder / f"f{t}.png")
    out = tmp_path / "out"
    r = run_cli("lam", nets["files"]["sliding", "torchscript"], folder, "--window", 12, 14, "--size", 4,
                "--fold", FOLD, "--device", "cpu", "--out", out)
    assert r.returncode == 0, r.stderr
    lr = np.stack([ref.prepare_lr(f, 2) for f in hr])
    reference = ref.reference_video_lam(nets["sliding"], lr, 12, 14, 4, None, fold=FOLD)
    assert np.abs(np.load(out / "maps.npy") - reference["M"]).max() <= 1e-4
    assert json.loads((out / "result.json").read_text())["frame"] == T // 2


@pytest.mark.parametrize("case,message", [("sizes", "every frame must have one size"),
                                          ("frame", "out of range"), ("count", "takes 3 frames")])
def test_cli_bad_video_input(nets, frames, tmp_path, case, message):
    paths = _write_frames(tmp_path / "lr", frames)
    model, frame = nets["files"]["recurrent", "dynamo"], "1"  # fixed T = 3, fixed 16×16
    if case == "sizes":
        model = nets["files"]["recurrent", "torchscript"]  # dynamic sizes: the frames disagree
        Image.fromarray(np.zeros((LR, LR + 2, 3), np.uint8)).save(paths[1])
    elif case == "frame":
        frame = "3"
    else:
        paths = paths + paths[:1]
    out = tmp_path / "out"
    r = run_cli("lam", model, *paths, "--frame", frame, "--lr", "--window", *WINDOW, "--size", SIZE,
                "--fold", FOLD, "--device", "cpu", "--out", out)
    assert r.returncode == 2
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], r.stderr
    assert not out.exists()
