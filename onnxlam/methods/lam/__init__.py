"""The local attribution map (Gu & Dong, CVPR 2021; LAM-SPEC): `method.py` registers it, `run.py`
runs its stages on a loaded model, `result.py` is what it returns, `files.py` what it writes,
`analyzer.py` the one-model convenience (`Analyzer`, `analyze`)."""
