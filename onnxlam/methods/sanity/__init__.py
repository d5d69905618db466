"""The model-parameter randomisation test (Adebayo et al., NeurIPS 2018): `method.py` registers it,
`options.py` declares its options, `randomise.py` re-draws the weights, `statistics.py` compares the
maps, `run.py` runs the stages, `result.py` is what it returns and `files.py` what it writes."""
