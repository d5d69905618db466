"""LAM through the noise tunnel (SmoothGrad, SmoothGrad², VarGrad): `tunnel.py` computes it,
`method.py` registers its three combinations."""
