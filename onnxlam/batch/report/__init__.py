"""Batch reports: LAM (or CEM, or a noise tunnel: `--method`, methods/options.py) over models × images ×
windows, resumable, with results.csv/json and index.html.

`config` (what to run: flags or TOML → cases) → `run` (the cases, grouped by model and image) →
`store` (fingerprints, case folders, rows, aggregate files) → `html` (index.html).
"""
from onnxlam.batch.report.config import (CONFIG_KEYS, Case, ConfigValues, ReportConfig, WindowSpec, expand_images,
                                         load_config, parse_window, plan_cases, read_windows_file)
from onnxlam.batch.report.run import (ModelSession, PendingRun, ReportListener, check_out, fail_case, plan_run,
                                      run_group, run_report, run_serial)
from onnxlam.batch.report.store import (CSV_COLUMNS, CaseRow, Fingerprint, ModelSummary, Report, exclusive,
                                        read_complete, remove_leftovers, results_json, write_aggregates)
from onnxlam.lam.options import LamOptions
from onnxlam.methods.options import METHODS, MethodOptions, parse_methods

__all__ = ["CONFIG_KEYS", "CSV_COLUMNS", "METHODS", "Case", "CaseRow", "ConfigValues", "Fingerprint", "LamOptions",
           "MethodOptions", "ModelSession",
           "ModelSummary", "PendingRun", "Report", "ReportConfig", "ReportListener", "WindowSpec", "check_out",
           "exclusive", "expand_images", "fail_case", "load_config", "parse_window", "plan_cases", "plan_run",
           "read_complete", "read_windows_file", "remove_leftovers", "results_json", "run_group", "run_report",
           "run_serial", "parse_methods", "write_aggregates"]
