"""Faithfulness of an attribution map: deletion and insertion curves of the LAM detector against
random orders, and Captum's infidelity and sensitivity-max of the gradient. `method.py` registers
it, `options.py` declares its options, `curves.py` is its numpy layer, `run.py` runs it on a loaded
model, `result.py` is what it returns and `files.py` what it writes and draws."""
