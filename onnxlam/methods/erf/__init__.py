"""The effective receptive field (Luo et al., NeurIPS 2016): `method.py` registers it, `options.py`
declares its options, `field.py` computes it, draws its picture and writes its folder."""
