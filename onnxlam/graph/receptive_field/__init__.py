"""Static receptive field of an ONNX super-resolution graph: which LR pixels an SR pixel can depend on.

    >>> rf = analyse_file("model.onnx")                  # input fixed to 1×C×32×32, then 64×64
    >>> rf.global_, rf.reach, rf.period                  # (False, (18, 18, 18, 18), (1, 1))
    >>> crop_box(rf, (120, 80, 16), 4, (270, 480))       # LR box whose SR equals the full image's

Definitions (LR = the model's input grid, SR = its output grid, s = SR/LR size ratio per axis):

* ``reach = (top, bottom, left, right)``: for every SR pixel (Y, X) the output can depend only on
  LR pixels in rows ``[⌊Y/s⌋ − top, ⌊Y/s⌋ + bottom]`` and columns ``[⌊X/s⌋ − left, ⌊X/s⌋ + right]``.
  It is the maximum over *all* SR positions, border ones included (a reflect pad folds a border
  pixel's cone inwards; where that makes a border pixel reach further than an interior one, the
  reach says so), and it is tight: no smaller reach holds at every position of the analysed size.
* "depend" is structural: a value depends on every input that an operator reads to compute it
  (every tap of a convolution window whatever its weight, every tap of a linear/cubic resize,
  clamped at the border as the runtime does). Numerical accidents (a zero weight, a ReLU that is
  off) can only make the true dependence smaller, never larger, so the reach is sound.
* ``global_``: some operator mixes a whole image axis (a global pool, a reduction, a softmax or a
  normalisation over pixels, a matrix product contracting pixel positions, an unknown operator, a
  wrap-around pad ...) or the reach keeps growing with the image size; ``reason`` names the first
  such node.
* ``period = (p_rows, p_cols)``: the model is shift-equivariant for LR shifts that are multiples of
  the period (the product of the strides along the way, e.g. 4 for two stride-2 convolutions), so a
  crop must start at a multiple of it to be computed on the same sampling phase. ``None`` when some
  operator is not shift-equivariant at all (``align_corners`` resizing, say).

How it works. The model's input is fixed to 1×C×h×w, shapes are inferred and shape arithmetic is
folded to constants (reflect pads written as Gathers of computed indices become Gathers of constant
indices). Then every tensor on the path from the input carries, for each LR axis (rows, cols), two
integer arrays ``lo``/``hi`` broadcastable to the tensor's shape: element e depends on LR rows
``[lo_rows[e], hi_rows[e]]`` × columns ``[lo_cols[e], hi_cols[e]]`` (a box hull). Operators map these
exactly per position: a convolution takes the min/max over its window (padding taps read nothing),
a Pad/Slice/Gather re-indexes, a Resize reads its taps, a Reshape/Transpose reshapes the arrays
(so window partitions and pixel (un)shuffles are tracked exactly), a contraction takes the hull
over the contracted axis. A contraction over an axis whose size grows with the image (found by
comparing the inferred shapes at two image sizes) makes the result global. The analysis is repeated
at twice the size; the reach must agree (``confirmed``), otherwise the size is doubled again
(up to ``max_size``) and a reach that keeps growing is reported as global.

Crops (``crop_box``). An SR pixel computed on an LR crop equals the full-image one when the crop
contains the pixel's cone ``[⌊Y/s⌋ − top, ⌊Y/s⌋ + bottom]`` clipped to the image, and starts on the
sampling phase (a multiple of the period). Every intermediate value in the cone has its own cone
inside it. Where the unclipped cone lies inside the image, the pixel's computation reads no
padding at all (the reach is at least the interior, unfolded reach), so the crop's artificial
border (zero padding, reflect/edge padding, resize clamping) is never read; where the cone crosses
the image border, the box is clipped there, so the crop shares that border with the image and the
model pads it exactly as on the full image (a reflect pad of width p reflects rows 1..p, which
are in the cone). So reflect/edge pads need no extra margin beyond the reach; what they need is
that the box is the reach-based cone, not the per-pixel hull: with a dilated kernel after a
reflect pad a border pixel's hull can miss row 0 although the pixel reads the reflection, and a
crop starting at row 1 would reflect differently. This holds for shift-equivariant local networks
(CNNs with zero/reflect/edge padding, pixel shuffles, strided and transposed convolutions,
nearest/linear/cubic resizing with integer factors and half-pixel or asymmetric coordinates); the
tests check it against full-image runs.
"""
from onnxlam.graph.receptive_field.analysis import analyse_file, prepare, receptive_field
from onnxlam.graph.receptive_field.crop import crop_box, dependence_box
from onnxlam.graph.receptive_field.field import ReceptiveField

__all__ = ["ReceptiveField", "receptive_field", "analyse_file", "prepare", "crop_box", "dependence_box"]
