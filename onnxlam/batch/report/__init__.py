"""Batch reports: any registered method (`--method`) over models × images × windows, resumable, with
results.csv/json and index.html.

`target` (where it runs) · `config` (what to run: flags or TOML → cases) → `run` (the cases, grouped
by model, image and method) → `store` (fingerprints, case folders, rows, summaries) → `html`
(index.html) → `aggregates` (results.csv, results.json and index.html on disk).
"""
import importlib

_HOMES = {  # public name -> the module that defines it, imported on first use (the command line
    # reads `config` without loading the run's numpy and onnx)
    "AggregateWriter": "onnxlam.batch.report.aggregates",
    "write_aggregates": "onnxlam.batch.report.aggregates",
    "Case": "onnxlam.batch.report.config",
    "ConfigValues": "onnxlam.batch.report.config",
    "ReportConfig": "onnxlam.batch.report.config",
    "WindowSpec": "onnxlam.batch.report.config",
    "config_keys": "onnxlam.batch.report.config",
    "expand_images": "onnxlam.batch.report.config",
    "load_config": "onnxlam.batch.report.config",
    "method_keys": "onnxlam.batch.report.config",
    "parse_window": "onnxlam.batch.report.config",
    "plan_cases": "onnxlam.batch.report.config",
    "read_windows_file": "onnxlam.batch.report.config",
    "Models": "onnxlam.batch.report.run",
    "PendingRun": "onnxlam.batch.report.run",
    "ReportListener": "onnxlam.batch.report.run",
    "default_resolver": "onnxlam.batch.report.run",
    "fail_case": "onnxlam.batch.report.run",
    "plan_run": "onnxlam.batch.report.run",
    "run_group": "onnxlam.batch.report.run",
    "run_report": "onnxlam.batch.report.run",
    "run_serial": "onnxlam.batch.report.run",
    "CSV_COLUMNS": "onnxlam.batch.report.store",
    "CaseRow": "onnxlam.batch.report.store",
    "Fingerprint": "onnxlam.batch.report.store",
    "ModelSummary": "onnxlam.batch.report.store",
    "Report": "onnxlam.batch.report.store",
    "csv_columns": "onnxlam.batch.report.store",
    "exclusive": "onnxlam.batch.report.store",
    "read_complete": "onnxlam.batch.report.store",
    "remove_leftovers": "onnxlam.batch.report.store",
    "results_json": "onnxlam.batch.report.store",
    "LamOptions": "onnxlam.lam.options", "parse_methods": "onnxlam.methods.registry",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'onnxlam.batch.report' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value
    return value
