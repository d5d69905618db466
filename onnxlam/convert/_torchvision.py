"""Import spandrel where torchvision's compiled ops cannot load.

PyPI's torchvision wheels are CUDA builds; next to a CPU build of torch (the test extra's
`torch==2.13.0`) their `_C` library fails to load, and torchvision's meta registrations then
stop `import torchvision` with "operator torchvision::nms does not exist", which stops
`import spandrel` (its LaMa module imports torchvision). The two op schemas those registrations
need are defined here without kernels, so the import succeeds; an architecture that calls a
torchvision op (deformable convolution, say) still fails, at its call, with torch's own error.
"""
from __future__ import annotations

import functools


@functools.cache
def import_spandrel():
    """spandrel with spandrel_extra_arches installed; raises ImportError when either is missing."""
    import torch

    try:
        import torchvision  # noqa: F401
    except RuntimeError as e:
        if "torchvision::nms" not in str(e):
            raise
        lib = torch.library.Library("torchvision", "FRAGMENT")
        for name in ("nms", "qnms"):
            try:
                lib.define(f"{name}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            except RuntimeError:
                pass  # already defined by a partial import
        _libraries.append(lib)  # a Library deregisters its definitions when collected
        import sys
        for mod in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[mod]
        import torchvision  # noqa: F401,F811
    import spandrel
    import spandrel_extra_arches

    spandrel_extra_arches.install()
    return spandrel


_libraries: list = []
