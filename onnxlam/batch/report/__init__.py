"""Batch reports: LAM over models × images × windows, resumable, with results.csv/json and index.html.

`config` (what to run: flags or TOML → cases) → `run` (the cases, grouped by model and image) →
`store` (fingerprints, case folders, rows, aggregate files) → `html` (index.html).
"""
from onnxlam.batch.report.config import (CONFIG_KEYS, Case, ConfigValues, ReportConfig, WindowSpec, expand_images,
                                         load_config, parse_window, plan_cases, read_windows_file)
from onnxlam.batch.report.run import (ModelSession, ReportListener, _default_resolver, check_out,
                                      run_report)
from onnxlam.batch.report.store import (CSV_COLUMNS, CaseRow, Fingerprint, ModelSummary, Report,
                                        _row_from_result, exclusive, read_complete, results_json, write_aggregates)
from onnxlam.lam.options import LamOptions

__all__ = ["CONFIG_KEYS", "CSV_COLUMNS", "Case", "CaseRow", "ConfigValues", "Fingerprint", "LamOptions", "ModelSession",
           "ModelSummary", "Report", "ReportConfig", "ReportListener", "WindowSpec", "check_out", "exclusive",
           "expand_images", "load_config", "parse_window", "plan_cases", "read_complete", "read_windows_file",
           "results_json", "run_report", "write_aggregates"]
