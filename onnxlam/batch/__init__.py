"""Batch runs: reports (`report/`), the CI gate, sweeps and the Dask cluster runner (`cluster.py`)."""


def run_report(config, listener=None, resolve_model=None, reraise_unexpected: bool = False, cases=None):
    """A report run where its configuration says: in this process, or on the Dask cluster or scheduler
    it names (`cluster.run_report_on_cluster`)."""
    if config.cluster is None and config.scheduler is None:
        from onnxlam.batch.report.run import run_report as run_here

        return run_here(config, listener, resolve_model, reraise_unexpected, cases)
    from onnxlam.batch.cluster import run_report_on_cluster

    return run_report_on_cluster(config, listener=listener, resolve_model=resolve_model,
                                 reraise_unexpected=reraise_unexpected)
