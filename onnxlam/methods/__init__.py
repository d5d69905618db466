"""The interpretation methods, one subpackage each, and their registry (`registry.py`).

`lam/` is the local attribution map (Gu & Dong, CVPR 2021), `noise_tunnel/` LAM through the noise
tunnel (SmoothGrad, SmoothGrad², VarGrad), `cem/` the causal effect map (Hu et al., TPAMI 2025),
`erf/` the effective receptive field, `video/` LAM of a video model's frames. `base.py` holds the
contract every method keeps and the result every method returns.
"""
from onnxlam.methods.registry import DEFAULT, method, methods, names, parse_methods, register, unregister

__all__ = ["DEFAULT", "method", "methods", "names", "parse_methods", "register", "unregister"]
