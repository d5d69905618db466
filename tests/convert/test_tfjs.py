"""onnxlam.convert.tfjs against an independent PyTorch implementation of the Keras layers and against
TensorFlow.js itself; its errors; the `import-tfjs` command; fetching the collection's TF.js models.

The reference below walks model.json with its own weight reader and writes every layer with torch in
NHWC, from the Keras and TensorFlow documentation (``tf.nn.depth_to_space``: the depth splits into
[block, block, out_depth]); it shares no code with the converter. The UpscalerJS models come from
their npm tarballs (``npm pack``, cached in pytest's cache folder, sha256 checked against the manifest).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import pathlib
import shutil
import subprocess
import tarfile

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F

from onnxlam.convert import collection, tfjs
from onnxlam.core.errors import InputError
from onnxlam.engine.runtime import serialise
from tests.clitools import run_cli

pytestmark = pytest.mark.integration

RNG = np.random.default_rng(0)
TFJS_VERSION = "4.22.0"
TOLERANCE = 1e-4  # max |Δ| relative to the model's value range (outputs in [0, 255] get 255x)


# --------------------------------------------------------------------------- writing TF.js models


def layer(cls: str, name: str, inbound=(), **config) -> dict:
    return {"class_name": cls, "name": name, "config": {"name": name, **config},
            "inbound_nodes": [[[src, 0, 0, {}] for src in inbound]] if inbound else []}


def conv(name: str, src: str, cin: int, filters: int, weights: dict, k=(3, 3), padding="same",
         activation="linear", use_bias=True) -> dict:
    weights[f"{name}/kernel"] = RNG.standard_normal((*k, cin, filters)).astype(np.float32) * (
        1.0 / math.sqrt(k[0] * k[1] * cin))
    if use_bias:
        weights[f"{name}/bias"] = RNG.standard_normal(filters).astype(np.float32) * 0.1
    return layer("Conv2D", name, [src], filters=filters, kernel_size=list(k), strides=[1, 1], padding=padding,
                 data_format="channels_last", dilation_rate=[1, 1], groups=1, activation=activation,
                 use_bias=use_bias)


def write_model(folder: pathlib.Path, layers: list, weights: dict, shards: int = 1) -> pathlib.Path:
    """model.json + shards; the manifest lists the weights in a shuffled order (not the layers')."""
    folder.mkdir(parents=True, exist_ok=True)
    names = [list(weights)[i] for i in RNG.permutation(len(weights))]
    data = b"".join(weights[n].astype("<f4").tobytes() for n in names)
    cuts = np.linspace(0, len(data), shards + 1).astype(int)
    paths = [f"group1-shard{i + 1}of{shards}.bin" for i in range(shards)]
    for p, a, b in zip(paths, cuts, cuts[1:]):
        (folder / p).write_bytes(data[a:b])
    spec = {"format": "layers-model", "generatedBy": "onnxlam tests", "convertedBy": None,
            "modelTopology": {"keras_version": "2.10.0", "backend": "tensorflow", "model_config": {
                "class_name": "Functional", "config": {
                    "name": "model", "layers": layers, "input_layers": [[layers[0]["name"], 0, 0]],
                    "output_layers": [[layers[-1]["name"], 0, 0]]}}},
            "weightsManifest": [{"paths": paths, "weights": [
                {"name": n, "shape": list(weights[n].shape), "dtype": "float32"} for n in names]}]}
    path = folder / "model.json"
    path.write_text(json.dumps(spec))
    return path


def input_layer(name="LR", channels=3) -> dict:
    return layer("InputLayer", name, batch_input_shape=[None, None, None, channels], dtype="float32")


def rrdn_like(folder: pathlib.Path, first_padding: str = "valid") -> pathlib.Path:
    """Every known class: a 'valid' and a 4x2 'same' convolution (asymmetric padding), a bias-free one, fused and separate activations (each of them), LeakyReLU, Concatenate, a 3-way
    Add, MultiplyBeta, PixelShuffle3x and UpSampling2D: scale 6."""
    w: dict = {}
    layers = [input_layer(), conv("c0", "LR", 3, 8, w, padding=first_padding), conv("c1", "c0", 8, 8, w, activation="relu"),
              layer("Concatenate", "cat1", ["c0", "c1"], axis=-1), conv("c2", "cat1", 16, 8, w, k=(1, 1), use_bias=False),
              layer("MultiplyBeta", "beta", ["c2"], trainable=True, dtype="float32"),
              layer("Add", "add", ["c0", "beta", "c1"])]
    branches = []
    for a in tfjs.ACTIVATIONS:
        layers.append(layer("Activation", f"act_{a}", ["add"], activation=a))
        branches.append(f"act_{a}")
    layers.append(layer("LeakyReLU", "lrelu", ["add"], alpha=0.1))
    branches.append("lrelu")
    layers += [layer("Concatenate", "cat2", branches, axis=3),
               conv("c3", "cat2", 8 * len(branches), 18, w, k=(4, 2), activation="tanh"),
               layer("PixelShuffle3x", "shuffle", ["c3"], scale=3),
               conv("c4", "shuffle", 2, 4, w, activation="elu"),
               layer("UpSampling2D", "up", ["c4"], size=[2, 2], data_format="channels_last", interpolation="nearest"),
               conv("SR", "up", 4, 3, w)]
    return write_model(folder, layers, w, shards=3)


def shuffle_model(folder: pathlib.Path, r: int) -> pathlib.Path:
    w: dict = {}
    layers = [input_layer(), conv("pre", "LR", 3, 3 * r * r, w), layer(f"PixelShuffle{r}x", "ps", ["pre"], scale=r)]
    return write_model(folder, layers, w)


# --------------------------------------------------------------------------- the reference


def reference_weights(model_json: pathlib.Path) -> dict:
    spec = json.loads(model_json.read_text())
    out = {}
    for group in spec["weightsManifest"]:
        values = np.frombuffer(b"".join((model_json.parent / p).read_bytes() for p in group["paths"]), "<f4")
        pos = 0
        for w in group["weights"]:
            n = math.prod(w["shape"])
            out[w["name"]] = torch.from_numpy(values[pos:pos + n].reshape(w["shape"]).copy())
            pos += n
        assert pos == values.size
    return out


ACT = {"linear": lambda x: x, "relu": torch.relu, "relu6": lambda x: x.clamp(0, 6), "sigmoid": torch.sigmoid,
       "hard_sigmoid": lambda x: (0.2 * x + 0.5).clamp(0, 1), "tanh": torch.tanh, "elu": F.elu, "selu": torch.selu,
       "softplus": lambda x: torch.log1p(torch.exp(x)), "softsign": lambda x: x / (1 + x.abs()),
       "swish": lambda x: x * torch.sigmoid(x), "mish": lambda x: x * torch.tanh(F.softplus(x)),
       "softmax": lambda x: torch.softmax(x, dim=-1)}


def depth_to_space_nhwc(x: torch.Tensor, r: int) -> torch.Tensor:
    n, h, w, c = x.shape
    return x.reshape(n, h, w, r, r, c // (r * r)).permute(0, 1, 3, 2, 4, 5).reshape(n, h * r, w * r, c // (r * r))


def keras_conv(x: torch.Tensor, cfg: dict, W: dict) -> torch.Tensor:
    kh, kw = cfg["kernel_size"]
    x = x.permute(0, 3, 1, 2)
    if cfg["padding"] == "same":
        x = F.pad(x, ((kw - 1) // 2, kw - 1 - (kw - 1) // 2, (kh - 1) // 2, kh - 1 - (kh - 1) // 2))
    bias = W[f"{cfg['name']}/bias"] if cfg.get("use_bias", True) else None
    y = F.conv2d(x, W[f"{cfg['name']}/kernel"].permute(3, 2, 0, 1), bias)
    return ACT[cfg.get("activation", "linear")](y.permute(0, 2, 3, 1))


def keras_reference(model_json: pathlib.Path, x_nhwc: np.ndarray) -> np.ndarray:
    """The model's output for an NHWC batch, computed layer by layer with torch."""
    config = json.loads(model_json.read_text())["modelTopology"]["model_config"]["config"]
    W = reference_weights(model_json)
    t: dict = {}
    with torch.no_grad():
        for L in config["layers"]:
            cls, cfg = L["class_name"], L["config"]
            xs = [t[src[0]] for src in L["inbound_nodes"][0]] if L["inbound_nodes"] else []
            if cls == "InputLayer":
                y = torch.from_numpy(x_nhwc)
            elif cls == "Conv2D":
                y = keras_conv(xs[0], cfg, W)
            elif cls == "Activation":
                y = ACT[cfg["activation"]](xs[0])
            elif cls == "LeakyReLU":
                y = F.leaky_relu(xs[0], cfg.get("alpha", 0.3))
            elif cls == "Concatenate":
                y = torch.cat(xs, dim=cfg["axis"])
            elif cls == "Add":
                y = sum(xs[1:], xs[0])
            elif cls == "UpSampling2D":
                y = xs[0].repeat_interleave(cfg["size"][0], 1).repeat_interleave(cfg["size"][1], 2)
            elif cls == "MultiplyBeta":
                y = xs[0] * 0.2
            elif cls.startswith("PixelShuffle"):
                y = depth_to_space_nhwc(xs[0], int(cls[len("PixelShuffle"):-1]))
            else:
                raise AssertionError(f"the reference has no {cls}")
            t[L["name"]] = y
    return t[config["output_layers"][0][0]].numpy()


def onnx_run(model, x_nchw: np.ndarray) -> np.ndarray:
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else serialise(onnx.load(model))
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x_nchw})[0]


def compare(model, model_json: pathlib.Path, x_nhwc: np.ndarray, value_range: float = 1.0) -> float:
    """max |Δ| (in units of the value range) of the ONNX model against the torch reference."""
    ref = keras_reference(model_json, x_nhwc).transpose(0, 3, 1, 2)
    got = onnx_run(model, np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2)))
    assert got.shape == ref.shape
    return float(np.abs(got - ref).max()) / value_range


def meta(model: onnx.ModelProto) -> dict:
    return {p.key: p.value for p in model.metadata_props}


# --------------------------------------------------------------------------- synthetic models


@pytest.mark.parametrize("shape", [(1, 7, 9), (2, 10, 6)])
def test_every_class_matches_the_torch_reference(tmp_path, shape):
    path = rrdn_like(tmp_path / "m")
    model = tfjs.convert(path)
    assert meta(model)["onnxlam.scale"] == "6" and "onnxlam.value_range" not in meta(model)
    assert {L["class_name"] for L in json.loads(path.read_text())["modelTopology"]["model_config"]["config"][
        "layers"]} == set(tfjs.KNOWN_CLASSES) - {"PixelShuffle2x", "PixelShuffle4x", "PixelShuffle8x"}
    n, h, w = shape
    x = RNG.uniform(0, 1, (n, h, w, 3)).astype(np.float32)
    err = compare(model, path, x)
    print(f"\nsynthetic every-class model {shape}: max |Δ| vs torch {err:.2e}")
    assert err <= TOLERANCE


@pytest.mark.parametrize("r", [2, 3, 4, 8])
def test_pixel_shuffle_is_depth_to_space(tmp_path, r):
    path = shuffle_model(tmp_path / "m", r)
    model = tfjs.convert(path)
    assert meta(model)["onnxlam.scale"] == str(r)
    assert compare(model, path, RNG.uniform(0, 1, (1, 3, 4, 3)).astype(np.float32)) <= TOLERANCE


def test_gradient_program_on_every_class(tmp_path):
    """onnx-ad differentiates every emitted op (DepthToSpace DCR, the activations, the nearest upsampling)."""
    from onnxlam.engine.program import FD_TOLERANCE, build_program

    out = tmp_path / "m.onnx"
    # 'same' everywhere: onnxlam needs an output exactly `scale` times the input
    onnx.save(tfjs.convert(rrdn_like(tmp_path / "m", first_padding="same"), value_range=1), out)
    prog = build_program(out, batch=1, height=8, width=8, cache=False)
    assert prog.fd_error is not None and prog.fd_error <= FD_TOLERANCE
    assert prog.scale == 6


# --------------------------------------------------------------------------- errors


def small_model(folder: pathlib.Path, **conv_config) -> pathlib.Path:
    w: dict = {}
    c = conv("c", "LR", 3, 4, w)
    c["config"].update(conv_config)
    return write_model(folder, [input_layer(), c, layer("Activation", "out", ["c"], activation="relu")], w)


def one_line_error(path, *needles) -> str:
    with pytest.raises(InputError) as err:
        tfjs.convert(path)
    text = str(err.value)
    assert "\n" not in text
    for needle in needles:
        assert needle in text, text
    return text


def test_unknown_class_is_named_with_the_known_ones(tmp_path):
    path = small_model(tmp_path)
    spec = json.loads(path.read_text())
    spec["modelTopology"]["model_config"]["config"]["layers"][2]["class_name"] = "Dense"
    path.write_text(json.dumps(spec))
    text = one_line_error(path, "'Dense'", "'out'", "Conv2D", "PixelShuffle3x")
    assert all(c in text for c in tfjs.KNOWN_CLASSES)


def test_missing_and_short_shards_are_named(tmp_path):
    path = small_model(tmp_path)
    shard = tmp_path / "group1-shard1of1.bin"
    data = shard.read_bytes()
    shard.write_bytes(data[:-8])
    one_line_error(path, "group1-shard1of1.bin", "short")
    shard.unlink()
    one_line_error(path, "group1-shard1of1.bin", "missing")


def test_weight_count_mismatch_is_named(tmp_path):
    path = small_model(tmp_path)
    shard = tmp_path / "group1-shard1of1.bin"
    shard.write_bytes(shard.read_bytes() + b"\0" * 16)
    one_line_error(path, "group1-shard1of1.bin", "weight count mismatch")
    spec = json.loads(path.read_text())
    spec["weightsManifest"][0]["weights"].append({"name": "ghost/kernel", "shape": [4], "dtype": "float32"})
    path.write_text(json.dumps(spec))
    one_line_error(path, "ghost/kernel", "weight count mismatch")
    spec["weightsManifest"][0]["weights"] = [w for w in spec["weightsManifest"][0]["weights"]
                                             if w["name"] not in ("ghost/kernel", "c/bias")]
    path.write_text(json.dumps(spec))
    shard.write_bytes(shard.read_bytes()[:-32])
    one_line_error(path, "c/bias", "'c'")


@pytest.mark.parametrize("config, needle", [({"strides": [2, 2]}, "strides"), ({"dilation_rate": [2, 2]},
                         "dilation_rate"), ({"data_format": "channels_first"}, "channels_first"),
                         ({"activation": "gelu"}, "'gelu'"), ({"padding": "causal"}, "'causal'"),
                         ({"groups": 3}, "groups")])
def test_unsupported_configs_are_refused(tmp_path, config, needle):
    one_line_error(small_model(tmp_path, **config), needle, "'c'")


def test_import_tfjs_command(tmp_path):
    path = rrdn_like(tmp_path / "m")
    out = tmp_path / "m.onnx"
    r = run_cli("import-tfjs", path, "-o", out, "--value-range", "255")
    assert r.returncode == 0, r.stderr
    model = onnx.load(out)
    assert meta(model)["onnxlam.value_range"] == "255" and meta(model)["onnxlam.scale"] == "6"
    assert meta(model)["onnxlam.source"] == "tfjs:model.json"
    spec = json.loads(path.read_text())
    spec["modelTopology"]["model_config"]["config"]["layers"][1]["class_name"] = "SeparableConv2D"
    path.write_text(json.dumps(spec))
    r = run_cli("import-tfjs", path, "-o", tmp_path / "bad.onnx")
    assert r.returncode == 2 and not (tmp_path / "bad.onnx").exists()
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "SeparableConv2D" in lines[0] and "'c0'" in lines[0]


# --------------------------------------------------------------------------- the UpscalerJS models


def npm_or_skip() -> str:
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not on PATH: the UpscalerJS packages and TensorFlow.js come from npm")
    return npm


@pytest.fixture(scope="session")
def upscalerjs(request, tmp_path_factory):
    """name -> (model.json extracted from its npm tarball, manifest entry); tarballs cached across runs."""
    npm_or_skip()
    cache = pathlib.Path(request.config.cache.mkdir("upscalerjs-npm"))
    unpacked = tmp_path_factory.mktemp("upscalerjs")

    def get(name: str):
        entry = collection.entry_named(name)
        package = entry.source["package"]
        folder = cache / package.replace("/", "_").replace("@", "")
        folder.mkdir(exist_ok=True)
        tarballs = list(folder.glob("*.tgz"))
        tarball = tarballs[0] if tarballs else collection.npm_pack(package, folder)
        assert collection.sha256_file(tarball) == entry.source["tarball_sha256"]
        dest = unpacked / name
        if not dest.exists():
            dest.mkdir()
            collection.extract_tfjs(tarball, entry.source["model"], dest)
        return dest / "model.json", entry

    return get


TFJS_COMMITTED = [m.name for m in collection.list_models() if m.source["kind"] == "tfjs" and not m.fetch]


@pytest.mark.parametrize("name", TFJS_COMMITTED)
def test_committed_upscalerjs_models_match_the_torch_reference(upscalerjs, name):
    model_json, entry = upscalerjs(name)
    vr = float(entry.input["value_range"])
    assert entry.params == sum(w.numel() for w in reference_weights(model_json).values())
    committed = onnx.load(entry.path)
    assert meta(committed)["onnxlam.value_range"] == entry.input["value_range"]
    assert meta(committed)["onnxlam.scale"] == str(entry.scale)
    errs = []
    for n, h, w in [(1, 9, 11), (2, 16, 13)]:
        x = RNG.uniform(0, vr, (n, h, w, 3)).astype(np.float32)
        errs.append(compare(committed, model_json, x, vr))
    print(f"\n{name}: max |Δ| vs torch {max(errs) * vr:.2e} (range {vr:g})")
    assert max(errs) <= TOLERANCE


def test_gradient_program_on_a_committed_model():
    from onnxlam.engine.program import FD_TOLERANCE, build_program

    entry = collection.entry_named("esrgan-slim-x2")
    prog = build_program(entry.path, batch=1, height=12, width=12, cache=False)
    assert prog.fd_error is not None and prog.fd_error <= FD_TOLERANCE and prog.scale == 2


# --------------------------------------------------------------------------- TensorFlow.js itself

RUNNER = r"""
const fs = require('fs');
const path = require('path');
const tf = require('@tensorflow/tfjs');
const first = (inputs) => (Array.isArray(inputs) ? inputs[0] : inputs);
// the custom layers as the UpscalerJS packages register them (packages/shared/src/esrgan/esrgan.js)
class MultiplyBeta extends tf.layers.Layer {
  constructor(config) { super(config || {}); this.beta = 0.2; }
  call(inputs) { return tf.mul(first(inputs), this.beta); }
  static get className() { return 'MultiplyBeta'; }
}
tf.serialization.registerClass(MultiplyBeta);
for (const r of [2, 3, 4, 8]) {
  class PixelShuffle extends tf.layers.Layer {
    constructor(config) { super(config || {}); this.scale = r; }
    computeOutputShape(s) { return [s[0], s[1] && s[1] * r, s[2] && s[2] * r, s[3] / (r * r)]; }
    call(inputs) { return tf.depthToSpace(first(inputs), r, 'NHWC'); }
    static get className() { return `PixelShuffle${r}x`; }
  }
  tf.serialization.registerClass(PixelShuffle);
}
async function main() {
  const [modelJson, inFile, n, h, w, c, outFile] = process.argv.slice(2);
  await tf.setBackend('cpu');
  const spec = JSON.parse(fs.readFileSync(modelJson, 'utf8'));
  // file:// needs tfjs-node; an IOHandler that reads model.json and its shards with fs does not
  const handler = { load: async () => {
    const weightSpecs = [], buffers = [];
    for (const g of spec.weightsManifest) {
      weightSpecs.push(...g.weights);
      for (const p of g.paths) buffers.push(fs.readFileSync(path.join(path.dirname(modelJson), p)));
    }
    const all = Buffer.concat(buffers);
    return { modelTopology: spec.modelTopology, weightSpecs, format: spec.format,
             weightData: all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength) };
  } };
  const model = await tf.loadLayersModel(handler);
  const raw = fs.readFileSync(inFile);
  const x = tf.tensor4d(new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4), [+n, +h, +w, +c]);
  const y = model.predict(x);
  const data = await y.data();
  fs.writeFileSync(outFile, Buffer.from(data.buffer, data.byteOffset, data.byteLength));
  process.stdout.write(JSON.stringify(y.shape) + '\n');
}
main().catch((e) => { console.error(e.stack || String(e)); process.exit(1); });
"""


@pytest.fixture(scope="session")
def tfjs_predict(request, tmp_path_factory):
    """model.json, NHWC batch -> TensorFlow.js's model.predict (pure-JS CPU backend, in Node)."""
    npm = npm_or_skip()
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not on PATH: TensorFlow.js runs in Node")
    prefix = pathlib.Path(request.config.cache.mkdir(f"tfjs-{TFJS_VERSION}"))
    installed = prefix / "node_modules" / "@tensorflow" / "tfjs" / "package.json"
    if not installed.is_file() or json.loads(installed.read_text())["version"] != TFJS_VERSION:
        subprocess.run([npm, "install", "--no-save", "--no-audit", "--no-fund", "--prefix", str(prefix),
                        f"@tensorflow/tfjs@{TFJS_VERSION}"], check=True, capture_output=True, timeout=900)
    work = tmp_path_factory.mktemp("tfjs-run")
    script = work / "predict.js"
    script.write_text(RUNNER)
    env = {**os.environ, "NODE_PATH": str(prefix / "node_modules")}

    def predict(model_json: pathlib.Path, x: np.ndarray) -> np.ndarray:
        x.astype("<f4").tofile(work / "in.bin")
        r = subprocess.run([node, str(script), str(model_json), str(work / "in.bin"), *map(str, x.shape),
                            str(work / "out.bin")], capture_output=True, text=True, env=env, timeout=600)
        assert r.returncode == 0, r.stderr
        shape = json.loads(r.stdout.strip().splitlines()[-1])
        return np.fromfile(work / "out.bin", "<f4").reshape(shape)

    return predict


def check_against_tfjs(predict, model, model_json, vr: float, name: str) -> None:
    x = RNG.uniform(0, vr, (1, 12, 10, 3)).astype(np.float32)
    ref = predict(model_json, x).transpose(0, 3, 1, 2)
    got = onnx_run(model, np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    assert got.shape == ref.shape
    err = float(np.abs(got - ref).max())
    print(f"\n{name}: max |Δ| vs TensorFlow.js {TFJS_VERSION} {err:.2e} (range {vr:g})")
    assert err <= TOLERANCE * vr


@pytest.mark.parametrize("name", ["esrgan-slim-x4", "esrgan-medium-x2"])
def test_upscalerjs_models_match_tensorflow_js(upscalerjs, tfjs_predict, name):
    model_json, entry = upscalerjs(name)
    check_against_tfjs(tfjs_predict, entry.path, model_json, float(entry.input["value_range"]), name)


def test_every_class_matches_tensorflow_js(tfjs_predict, tmp_path):
    path = rrdn_like(tmp_path / "m")
    check_against_tfjs(tfjs_predict, tfjs.convert(path), path, 1.0, "synthetic every-class model")


# --------------------------------------------------------------------------- fetching


def npm_tarball(path: pathlib.Path, model_json: pathlib.Path, model: str = "models/x6/model.json") -> pathlib.Path:
    """An npm-pack-like tarball: package/package.json and the model under package/MODEL's folder."""
    folder = pathlib.PurePosixPath("package", model).parent
    with tarfile.open(path, "w:gz") as tar:
        def add(name: str, data: bytes):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        add("package/package.json", b'{"name": "@test/sr", "version": "1.0.0"}')
        for f in sorted(model_json.parent.iterdir()):
            add(str(folder / ("model.json" if f == model_json else f.name)), f.read_bytes())
    return path


@pytest.fixture
def fetchable(tmp_path, monkeypatch):
    """A temporary collection (the real manifest plus one synthetic `fetch: true` TF.js model) and its tarball."""
    tarball = npm_tarball(tmp_path / "test-sr-1.0.0.tgz", rrdn_like(tmp_path / "src"))
    models = tmp_path / "models"
    models.mkdir()
    manifest = json.loads((collection.models_dir() / collection.MANIFEST).read_text())
    manifest.append({"file": "test-sr-x6.onnx", "name": "test-sr-x6", "architecture": "test", "scale": 6,
                     "params": 1, "license": "MIT", "sha256": "0" * 64, "fetch": True,
                     "input": {"value_range": "1", "channels": "rgb"},
                     "source": {"kind": "tfjs", "package": "@test/sr@1.0.0", "model": "models/x6/model.json",
                                "tarball_sha256": hashlib.sha256(tarball.read_bytes()).hexdigest()}})
    (models / collection.MANIFEST).write_text(json.dumps(manifest))
    monkeypatch.setattr(collection, "models_dir", lambda: models)
    monkeypatch.setenv("ONNXLAM_CACHE", str(tmp_path / "cache"))
    return models, tarball, tmp_path / "src" / "model.json"


def test_fetch_from_a_tarball(fetchable):
    models, tarball, model_json = fetchable
    assert not collection.entry_named("test-sr-x6").available
    r = run_cli("models", "--fetch", "test-sr-x6", "--from", tarball)
    assert r.returncode == 0, r.stderr
    path = models / "test-sr-x6.onnx"
    assert r.stdout.strip() == str(path) and collection.entry_named("test-sr-x6").available
    model = onnx.load(path)
    assert meta(model)["onnxlam.source"] == "tfjs:@test/sr@1.0.0:models/x6/model.json"
    assert meta(model)["onnxlam.value_range"] == "1" and meta(model)["onnxlam.name"] == "test-sr-x6"
    x = RNG.uniform(0, 1, (1, 6, 7, 3)).astype(np.float32)
    assert compare(model, model_json, x) <= TOLERANCE


def test_fetch_rejects_a_tarball_with_another_sha256(fetchable):
    models, tarball, _ = fetchable
    other = npm_tarball(tarball.with_name("other.tgz"), rrdn_like(tarball.parent / "other"))
    with pytest.raises(InputError, match="sha256") as err:
        collection.fetch("test-sr-x6", tarball=other)
    assert "nothing written" in str(err.value)
    assert not list(models.glob("*.onnx")) and not (tarball.parent / "cache").exists()
    r = run_cli("models", "--fetch", "test-sr-x6", "--from", other)
    assert r.returncode == 2 and "sha256" in r.stderr


def test_resolve_fetches_on_first_use(fetchable, monkeypatch):
    """resolve(name) of a TF.js model not fetched yet runs npm pack (here: copies the tarball) and
    converts it, reporting progress; into the cache when exported_models/ is not writable."""
    models, tarball, _ = fetchable
    packed = []

    def fake_npm_pack(package, dest):
        packed.append(package)
        return pathlib.Path(shutil.copy(tarball, dest))

    monkeypatch.setattr(collection, "npm_pack", fake_npm_pack)
    monkeypatch.setattr(collection.os, "access", lambda path, mode: False)
    notes: list[str] = []
    path = collection.resolve("test-sr-x6", notify=notes.append)
    assert packed == ["@test/sr@1.0.0"]
    assert path == tarball.parent / "cache" / "models" / "test-sr-x6.onnx" and path.is_file()
    assert not (models / "test-sr-x6.onnx").exists()
    assert any("npm pack" in n for n in notes) and any("wrote" in n for n in notes)
    assert collection.resolve("test-sr-x6") == path and packed == ["@test/sr@1.0.0"]  # fetched once


def test_fetch_without_npm_suggests_from(fetchable, monkeypatch):
    monkeypatch.setattr(collection.shutil, "which", lambda name: None)
    with pytest.raises(InputError, match="--from TARBALL") as err:
        collection.fetch("test-sr-x6")
    assert "npm" in str(err.value) and "\n" not in str(err.value)


def test_ncnn_fetch_models_keep_their_message(fetchable):
    with pytest.raises(InputError, match="fetch_models.py"):
        collection.resolve("realesrgan-x4plus")


def test_npm_pack_for_real_gives_the_committed_model(tmp_path, monkeypatch):
    """`npm pack @upscalerjs/esrgan-slim@1.0.0`, converted, computes what the committed esrgan-slim-x2 does."""
    npm_or_skip()
    committed = collection.entry_named("esrgan-slim-x2")
    models = tmp_path / "models"
    models.mkdir()
    manifest = json.loads((collection.models_dir() / collection.MANIFEST).read_text())
    for e in manifest:
        if e["name"] == committed.name:
            e["fetch"] = True
    (models / collection.MANIFEST).write_text(json.dumps(manifest))
    monkeypatch.setattr(collection, "models_dir", lambda: models)
    path = collection.fetch(committed.name)
    assert path == models / committed.file
    x = RNG.uniform(0, 255, (1, 3, 10, 9)).astype(np.float32)
    np.testing.assert_array_equal(onnx_run(path, x), onnx_run(committed_path(committed), x))


def committed_path(entry: collection.ModelEntry) -> pathlib.Path:
    return pathlib.Path(__file__).resolve().parents[2] / "exported_models" / entry.file
