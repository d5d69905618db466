"""Causal effect maps (CEM): which input blocks help, and which hurt, the restoration of an output region.

J. Hu, J. Gu, S. Yu, F. Yu, Z. Li, Z. You, C. Lu, C. Dong, "Interpreting Low-level Vision Models with
Causal Effect Maps", IEEE TPAMI 47(8), 2025 (arXiv 2407.19789); public code J-FHu/CEM. The algorithm,
every default of that code and onnxlam's documented deviations are in docs/CEM-SPEC.md (cited as §N).

For a region of interest (ROI) of side R at column w, row h of the output, and a model F:

    P(y)  = PSNR of Q(y)[h:h+R, w:w+R] against the ground truth I (RGB, float64 MSE, no shave),
            Q(y) = uint8(round(clip(y, 0, 1) · 255))                                        (§1)
    O     = P(F(x)), x the degraded input (SR: bicubic ×1/s; DN: I + N(0, σ))               (§1)
    x_ijk = x with input block (i, j) (b = block // s pixels a side) replaced by a patch
            drawn from a bank (SR: resized by cv2's INTER_CUBIC; DN: noised like x)        (§2)
    C_ijk = P(F(x_ijk)),  k = 1…Nc (`draws`) for every block (the coarse pass)             (§3)
    block (i, j) is refined iff max_k |O − C_ijk| ≥ tol: Nf (`refine`) new draws F_ijm     (§3)
    μ_ij  = mean_m F_ijm if refined, else mean_k C_ijk (never pooled)                      (§3)
    CE_ij = O − μ_ij dB, set to 0 where |CE_ij| < tol                                      (§4)

CE > 0: replacing the block lowers the ROI's PSNR, so its content helps; CE < 0: it hurts. The
effect range is max CE − min CE (§5); the picture is the paper's seismic map (§6). Only forward
passes are needed, so CEM runs on every model onnxruntime can run, gradient rules or not.

The package by concern: `options.py` (every option, declared once), `result.py` (the typed result),
`effects.py` (the numpy layer, pure functions: PSNR, patch resizing, refinement, effects, summary,
batch size), `bank.py` (the patch bank and the seeded draws), `runner.py` (`CemRunner` runs the
model: every intervention of a pass goes through onnxruntime in batches whose size is bounded by
`--max-memory` from the measured memory of one forward pass), `files.py` (the picture and the
folder), `method.py` (CEM as a registered method).

Documented deviations from the public code (§ "What onnxlam does differently"): the patch bank is
cut at seeded positions from the user's folder or the bundled photographs; patches are pasted in
RGB; every draw comes from one seeded generator (numpy's legacy `RandomState(seed)`, whose stream
numpy keeps stable: the DN input noise first, as the public code's `seed(0)`, then per intervention
a bank index and, for DN, the patch's noise); non-square inputs get a ceil(H/b) × ceil(W/b) grid;
ROI blocks are excluded from the counts (reported separately) and the ROI box is drawn on the ROI.
"""
