"""The cascading randomisation of a network's weights, from its output end (Adebayo et al., NeurIPS 2018).

The weight-bearing layers are the nodes Conv, ConvTranspose, Gemm and MatMul of the main graph
whose weight is an initializer: input 1 of Conv, ConvTranspose and Gemm, and either input of MatMul
that is an initializer (the other is the activation). Biases (input 2 of Conv, ConvTranspose and
Gemm) are kept: a bias shifts a layer's output by a constant per channel and holds no spatial
structure of its own, so the test asks what the learnt weights contribute. Nodes inside subgraphs
(If, Loop) and weights computed by other nodes (a Constant, a Cast, a dequantisation) are left out,
and so are initializers of other than float16/float32/float64 type.

The layers are taken in reverse topological order of their nodes (the order ONNX keeps the nodes
in, reversed): the output end first. An initializer that several nodes read is one layer, at the
place of its last reader. Stage k re-draws the first k of them (the last k layers of the network).

The draws: `rng = numpy.random.default_rng(seed)`; for the layers in stage order, layer j's tensor
W_j is replaced by `rng.normal(mean(W_j), std(W_j), W_j.shape)` (its own mean and population
standard deviation, in float64, cast back to W_j's type). Stage k keeps the draws of stages 1 … k−1
and adds the draw of layer k (cascading), so the same seed gives the same weights at every stage.

Each stage's network is another function: its `ModelInfo.sha256` is that of the source model, the
seed and the stage hashed together (`stage_sha256`), so nothing keyed by the trained model's sha256
(its cached programs, its measured memory) is ever taken for it.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

WEIGHT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
WEIGHT_TYPES = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE)


@dataclass(frozen=True)
class Layer:
    """A weight-bearing layer: the initializer re-drawn, the node that reads it (the last one) and its op."""

    initializer: str
    node: str
    op: str
    shape: tuple[int, ...]


def weight_inputs(node: onnx.NodeProto, weights: set[str]) -> list[str]:
    """The weight inputs of a weight-bearing node that are initializers (`weights`)."""
    if node.op_type == "MatMul":
        return [name for name in node.input if name in weights]
    if node.op_type in WEIGHT_OPS and len(node.input) > 1 and node.input[1] in weights:
        return [node.input[1]]
    return []


def weight_layers(model: onnx.ModelProto) -> list[Layer]:
    """The model's weight-bearing layers in stage order: reverse topological order of their nodes."""
    graph = model.graph
    tensors = {t.name: t for t in graph.initializer if t.data_type in WEIGHT_TYPES}
    layers: list[Layer] = []
    seen: set[str] = set()
    names = set(tensors)
    for index in range(len(graph.node) - 1, -1, -1):
        node = graph.node[index]
        for name in weight_inputs(node, names):
            if name not in seen:
                seen.add(name)
                layers.append(Layer(name, node.name or f"{node.op_type}#{index}", node.op_type,
                                    tuple(int(d) for d in tensors[name].dims)))
    return layers


def weight_arrays(model: onnx.ModelProto, layers: Sequence[Layer]) -> list[np.ndarray]:
    """The trained tensors of `layers`, in their order."""
    tensors = {t.name: t for t in model.graph.initializer}
    return [numpy_helper.to_array(tensors[layer.initializer]) for layer in layers]


def redraw(weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A normal draw of `weights`' shape with its mean and (population) standard deviation, its dtype."""
    w = np.asarray(weights, np.float64)
    return rng.normal(float(w.mean()), float(w.std()), w.shape).astype(np.asarray(weights).dtype)


def cascade(arrays: Sequence[np.ndarray], seed: int) -> Iterator[np.ndarray]:
    """The re-drawn tensors of the layers in stage order, one by one from `default_rng(seed)`."""
    rng = np.random.default_rng(seed)
    for w in arrays:
        yield redraw(w, rng)


def stage_weights(model: onnx.ModelProto, layers: Sequence[Layer], seed: int) -> Iterator[dict[str, np.ndarray]]:
    """Stage k's re-drawn tensors by initializer name, for k = 1 … len(layers) in turn: stage k's hold
    stage k−1's and the draw of layer k (cascading)."""
    weights: dict[str, np.ndarray] = {}
    for layer, drawn in zip(layers, cascade(weight_arrays(model, layers), seed)):
        weights = {**weights, layer.initializer: drawn}
        yield weights


def with_weights(model: onnx.ModelProto, weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    """A copy of `model` whose initializers named in `weights` hold those arrays instead."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for t in m.graph.initializer:
        if t.name in weights:
            t.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(weights[t.name]), t.name))
    return m


def stage_sha256(sha256: str, seed: int, stage: int) -> str:
    """The sha256 of stage `stage`'s network: the source model's, the seed and the stage, hashed."""
    return hashlib.sha256(f"{sha256}|sanity|seed={int(seed)}|stage={int(stage)}".encode()).hexdigest()
