"""Batch runs: reports, sweeps and the Dask cluster runner (issue 11)."""
