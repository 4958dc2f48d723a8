"""Validate raw data sets before training: GX suites for Adult and Boston, numpy checks for MNIST."""

from __future__ import annotations

import functools
import json
import logging
import math
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from pydantic import BaseModel

from nnstudy.errors import NnstudyError, ValidationFailed, join_some
from tasks.ingest import MNIST_IDX_ROLES

if TYPE_CHECKING:
    import great_expectations as gx

    from tasks.catalog import ResolvedData
    from tasks.ingest import RawData

# GX logs hundreds of INFO lines at import when the root logger is at INFO; set this before GX is imported.
logging.getLogger("great_expectations").setLevel(logging.WARNING)

MNIST_SUITE = "mnist-checks"
MAX_EXAMPLES = 5          # example values shown per failed expectation
MAX_FAILURES_SHOWN = 5    # failed expectations listed per file in raise_if_failed

# One GX context per process; batch.validate is not documented as thread-safe and Prefect may run tasks in threads.
_GX_LOCK = threading.Lock()


class SuiteError(NnstudyError):
    """An expectation suite file is missing, unreadable or contains expectations GX cannot build."""


class ValidationReport(BaseModel):
    """Outcome of validating one file: counts, one sentence per failure and the full result."""

    dataset: str
    file: str
    suite: str
    success: bool
    evaluated: int
    failed: int
    failures: list[str]
    result: dict[str, Any]

    def summary(self, max_failures: int | None = None) -> str:
        """One line: all passed, or which expectations failed (optionally only the first few)."""
        if self.success:
            return f"{self.file}: all {self.evaluated} expectations passed."
        return (f"{self.file} failed {self.failed} of {self.evaluated} expectations: "
                f"{join_some(self.failures, max_failures)}.")


# --------------------------------------------------------------------------- suites


def _suite_directory() -> Path:
    """The packaged folder schemas/expectations."""
    import schemas

    return Path(schemas.__file__).parent / "expectations"


@contextmanager
def _captured_gx_suite_errors() -> Iterator[list[str]]:
    """Collect the errors GX logs (with a traceback) when it drops an expectation, instead of printing them."""
    messages: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    log = logging.getLogger("great_expectations.core.expectation_suite")
    handler, old_propagate = _Collect(level=logging.ERROR), log.propagate
    log.addHandler(handler)
    log.propagate = False
    try:
        yield messages
    finally:
        log.removeHandler(handler)
        log.propagate = old_propagate


def _import_gx() -> Any:
    """Import great_expectations (slow, so only when needed) and keep it quiet."""
    import great_expectations as gx

    # This module forces its own logger to INFO at import and then announces the ephemeral docs temp dir.
    logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.WARNING)
    return gx


def load_suite(name: str, directory: Path | None = None) -> gx.ExpectationSuite:
    """Build the GX suite stored as <directory>/<name>.json, refusing files GX only partly understands."""
    gx = _import_gx()
    path = (directory or _suite_directory()) / f"{name}.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        known = sorted(p.stem for p in path.parent.glob("*.json"))
        raise SuiteError(f"Expectation suite {path} does not exist; suites in {path.parent}: {known}.") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise SuiteError(f"Expectation suite {path} cannot be read as JSON: {exc}. Fix or restore the file.") from exc
    try:
        with _captured_gx_suite_errors() as gx_errors:
            suite = gx.ExpectationSuite(**raw)
    except Exception as exc:  # GX raises pydantic.v1 errors for bad kwargs; name the file either way
        raise SuiteError(f"Expectation suite {path} is invalid: {' '.join(str(exc).split())}") from exc
    # GX logs and silently drops expectations of unknown type, so a typo would shrink the suite unnoticed.
    if len(suite.expectations) != len(raw.get("expectations", [])):
        built = Counter(e.expectation_type for e in suite.expectations)
        dropped = Counter(e.get("type") for e in raw["expectations"]) - built
        reasons = "; ".join(m.splitlines()[0] for m in gx_errors)
        raise SuiteError(
            f"Expectation suite {path} lists {len(raw['expectations'])} expectations but GX built only "
            f"{len(suite.expectations)}; dropped types: {sorted(dropped)} ({reasons or 'no reason logged'}). "
            "Correct the type names (see the GX 1.24 expectation gallery) or remove those entries."
        )
    return suite


# --------------------------------------------------------------------------- GX validation


@functools.cache
def _batch_definition() -> Any:
    """Ephemeral GX context with one whole-dataframe batch definition, built once per process (GX import takes ~4 s)."""
    gx = _import_gx()
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    # TQDM_DISABLE does not reach GX's "Calculating Metrics" bars; only this setting does.
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    asset = ctx.data_sources.add_or_update_pandas("nnstudy").add_dataframe_asset("frame")
    return asset.add_batch_definition_whole_dataframe("whole")


def validate_frame(
    df: pd.DataFrame, suite_name: str, *, file_label: str, parameters: dict[str, Any]
) -> ValidationReport:
    """Validate a whole DataFrame against a packaged suite; `parameters` fill its $PARAMETER values."""
    suite = load_suite(suite_name)
    missing = sorted(set(suite.suite_parameter_options) - set(parameters))
    if missing:
        raise ValueError(f"Suite {suite_name!r} needs parameters {missing} (e.g. the catalog's row count); "
                         f"got {sorted(parameters)}.")
    with _GX_LOCK:
        batch = _batch_definition().get_batch(batch_parameters={"dataframe": df})
        res = batch.validate(suite, result_format="SUMMARY", expectation_parameters=parameters)
    failures = [_gx_failure_sentence(r, df.columns) for r in _failed_in_suite_order(res, suite)]
    stats = res.statistics
    return ValidationReport(
        dataset=suite_name, file=file_label, suite=suite.name, success=bool(res.success),
        evaluated=int(stats["evaluated_expectations"]), failed=int(stats["unsuccessful_expectations"]),
        failures=failures, result=res.to_json_dict(),
    )


def _failed_in_suite_order(res: Any, suite: gx.ExpectationSuite) -> list[Any]:
    """Failed results in the suite's order, which lists table-level causes (a missing column) first."""
    # GX returns results grouped by metric, which scatters related failures.
    order = {(e.expectation_type, getattr(e, "column", None)): i for i, e in enumerate(suite.expectations)}

    def position(r: Any) -> int:
        return order.get((r.expectation_config.type, r.expectation_config.kwargs.get("column")), len(order))

    return sorted((r for r in res.results if not r.success), key=position)


def _exception_messages(info: Any) -> list[str]:
    """Error messages from exception_info, which is either flat or keyed by MetricConfigurationID strings."""
    if not info:
        return []
    if "raised_exception" in info:
        return [str(info["exception_message"])] if info["raised_exception"] else []
    return sorted({str(v["exception_message"]) for v in info.values()
                   if isinstance(v, dict) and v.get("raised_exception")})


def _short(value: Any) -> str:
    """repr of a kwarg value, with long lists reduced to their length so sentences stay readable."""
    if isinstance(value, (list, tuple)) and len(value) > 8:
        return f"[{len(value)} values]"
    return repr(value)


def _gx_failure_sentence(r: Any, frame_columns: pd.Index) -> str:
    """One sentence for a failed GX expectation result."""
    cfg, out = r.expectation_config, (r.result or {})
    column = cfg.kwargs.get("column")
    what = cfg.type + (f"[{column}]" if column else "")
    if errors := _exception_messages(r.exception_info):
        # GX's own message for a missing column is sometimes a bare "list index out of range".
        reason = (f"column {column!r} is missing from the data" if column and column not in frame_columns
                  else "; ".join(m.splitlines()[0][:160] for m in errors))
        return f"{what} could not be evaluated ({reason})"
    expected = ", ".join(f"{k}={_short(v)}" for k, v in cfg.kwargs.items() if k not in ("column", "batch_id"))
    if "unexpected_count" in out:
        return _unexpected_sentence(what, out["unexpected_count"], out["element_count"],
                                    out.get("partial_unexpected_list", []), expected,
                                    out.get("partial_unexpected_index_list"))
    if cfg.type == "expect_table_columns_to_match_ordered_list":
        return f"{what}: {_column_list_difference(list(out.get('observed_value') or []), cfg.kwargs['column_list'])}"
    return f"{what}: observed {out.get('observed_value')!r}, expected {expected}"


def _unexpected_sentence(what: str, unexpected: int, total: int, examples: list[Any], expected: str,
                         rows: list[Any] | None = None) -> str:
    """'<what>: 1 of 32,561 values (0.00307%) unexpected, e.g. [150] at rows [3] (expected ...)'."""
    percent = 100.0 * unexpected / total if total else 0.0
    text = (f"{what}: {unexpected:,} of {total:,} values ({percent:.3g}%) unexpected, "
            f"e.g. {list(examples)[:MAX_EXAMPLES]!r}")
    if rows:  # DataFrame index labels, so the user can find the line in the file
        text += f" at rows {list(rows)[:MAX_EXAMPLES]!r}"
    return text + (f" (expected {expected})" if expected else "")


def _column_list_difference(observed: list[str], expected: list[str]) -> str:
    """Say which columns are missing, extra or out of order rather than printing two long lists."""
    missing = [c for c in expected if c not in observed]
    extra = [c for c in observed if c not in expected]
    parts = [f"missing {missing}"] if missing else []
    parts += [f"unexpected {extra}"] if extra else []
    if not parts:
        parts = [f"same columns in a different order: {observed}"]
    return f"observed {len(observed)} columns, expected {len(expected)}: " + ", ".join(parts)


# --------------------------------------------------------------------------- MNIST


def _check(name: str, array: str, success: bool, observed: Any, expected: Any, **extra: Any) -> dict[str, Any]:
    """One numpy check in the same spirit as a GX result entry."""
    return {"check": name, "array": array, "success": bool(success),
            "observed": observed, "expected": expected, **extra}


def _out_of_range(name: str, array: str, values: np.ndarray, lo: int, hi: int) -> dict[str, Any]:
    """Element-wise range check reporting the count and example values outside [lo, hi]."""
    if not np.issubdtype(values.dtype, np.number):
        return _check(name, array, False, None, f"{lo}..{hi}", error=f"dtype {values.dtype} is not numeric")
    bad = values[(values < lo) | (values > hi)]
    return _check(name, array, bad.size == 0, [values.min().item(), values.max().item()] if values.size else None,
                  f"{lo}..{hi}", unexpected_count=int(bad.size), element_count=int(values.size),
                  partial_unexpected_list=bad[:MAX_EXAMPLES].tolist())


def _mnist_image_checks(x: np.ndarray, split: str, expected_rows: int) -> list[dict[str, Any]]:
    """Shape, dtype, pixel range, non-blank and row count of one image array."""
    name, numeric = f"x_{split}", np.issubdtype(x.dtype, np.number)
    return [
        _check("images_shape", name, x.ndim == 3 and x.shape[1:] == (28, 28), list(x.shape), "(N, 28, 28)"),
        _check("images_dtype", name, x.dtype == np.uint8, str(x.dtype), "uint8"),
        _out_of_range("pixel_range", name, x, 0, 255),
        _check("images_not_blank", name, numeric and x.size > 0 and bool(np.any(x)),
               x.max().item() if numeric and x.size else None, "max > 0"),
        _check("row_count", name, x.shape[0] == expected_rows if x.ndim else False,
               int(x.shape[0]) if x.ndim else None, expected_rows),
    ]


def _mnist_label_checks(y: np.ndarray, n_images: int | None, split: str, min_fraction: float) -> list[dict[str, Any]]:
    """Shape, length, dtype, range and per-digit counts of one label array."""
    name = f"y_{split}"
    checks = [
        _check("labels_shape", name, y.ndim == 1, list(y.shape), "(N,)"),
        _check("labels_length", name, n_images is not None and y.ndim >= 1 and y.shape[0] == n_images,
               int(y.shape[0]) if y.ndim else None, n_images),
        _check("labels_dtype", name, np.issubdtype(y.dtype, np.integer), str(y.dtype), "an integer dtype"),
        _out_of_range("label_range", name, y, 0, 9),
    ]
    if not np.issubdtype(y.dtype, np.number):
        return checks
    # Half of a uniform share by default: real MNIST's rarest digit (5) still has ~9% of each split.
    minimum = math.ceil(min_fraction * y.size)
    counts = {d: int(np.count_nonzero(y == d)) for d in range(10)}
    short = [d for d, c in counts.items() if c < minimum or c == 0]
    checks.append(_check("class_counts", name, not short, {str(d): c for d, c in counts.items()},
                         f">= {minimum:,} per digit ({min_fraction:.0%} of {y.size:,})", short_digits=short))
    return checks


def _mnist_checks(arrays: dict[str, np.ndarray], expected: dict[str, int], min_fraction: float) -> list[dict[str, Any]]:
    """All checks for the train and test splits; a missing array is a failed check, not an exception."""
    checks: list[dict[str, Any]] = []
    for split, rows in expected.items():
        x, y = arrays.get(f"x_{split}"), arrays.get(f"y_{split}")
        for key, arr in ((f"x_{split}", x), (f"y_{split}", y)):
            if arr is None:
                checks.append(_check("array_present", key, False, sorted(arrays), key,
                                     error=f"array {key!r} is missing; got {sorted(arrays)}"))
        n_images = None
        if x is not None:
            x = np.asarray(x)
            checks += _mnist_image_checks(x, split, rows)
            n_images = int(x.shape[0]) if x.ndim else None
        if y is not None:
            checks += _mnist_label_checks(np.asarray(y), n_images, split, min_fraction)
    return checks


def _mnist_failure_sentence(c: dict[str, Any], sources: dict[str, str] | None = None) -> str:
    """One sentence for a failed numpy check, worded like the GX ones; names the array's file when known."""
    what = f"{c['check']}[{c['array']}]"
    if sources and c["array"] in sources:
        what += f" in {sources[c['array']]}"
    if "error" in c:
        return f"{what} could not be evaluated ({c['error']})"
    if "unexpected_count" in c:
        return _unexpected_sentence(what, c["unexpected_count"], c["element_count"],
                                    c["partial_unexpected_list"], c["expected"])
    if c["check"] == "class_counts":
        few = {d: c["observed"][str(d)] for d in c["short_digits"]}
        return f"{what}: digits {c['short_digits']} have too few images {few}, expected {c['expected']}"
    return f"{what}: observed {c['observed']!r}, expected {c['expected']}"


def validate_mnist(
    arrays: dict[str, np.ndarray],
    *,
    file_label: str,
    expected_train_rows: int,
    expected_test_rows: int,
    min_per_class_fraction: float = 0.05,
    sources: dict[str, str] | None = None,
) -> ValidationReport:
    """Check MNIST arrays (x_/y_ train/test) with numpy; each digit needs `min_per_class_fraction` of its split.

    `sources` maps an array name (x_train...) to the file it came from, so a failure names that file.
    """
    if not 0.0 <= min_per_class_fraction <= 0.1:
        raise ValueError("min_per_class_fraction must be within 0..0.1 (a uniform share is 0.1); "
                         f"got {min_per_class_fraction}.")
    checks = _mnist_checks(arrays, {"train": expected_train_rows, "test": expected_test_rows}, min_per_class_fraction)
    failed = [c for c in checks if not c["success"]]
    stats = {"evaluated_expectations": len(checks), "successful_expectations": len(checks) - len(failed),
             "unsuccessful_expectations": len(failed),
             "success_percent": 100.0 * (len(checks) - len(failed)) / len(checks) if checks else 100.0}
    return ValidationReport(
        dataset="mnist", file=file_label, suite=MNIST_SUITE, success=not failed,
        evaluated=len(checks), failed=len(failed), failures=[_mnist_failure_sentence(c, sources) for c in failed],
        result={"success": not failed, "statistics": stats, "results": checks,
                "meta": {"suite": MNIST_SUITE, "min_per_class_fraction": min_per_class_fraction}},
    )


# --------------------------------------------------------------------------- one resolved data set


def validate_raw(resolved: ResolvedData, raw: RawData, expected_rows: dict[str, int | None]) -> list[ValidationReport]:
    """Validate every file of a parsed data set; `expected_rows` is the catalog's row count per file role."""
    if resolved.dataset == "mnist":
        if resolved.format == "npz":
            sources = {key: f"{resolved.path('archive')}, array {key}" for key in MNIST_IDX_ROLES}
        else:
            sources = {key: str(resolved.path(role)) for key, role in MNIST_IDX_ROLES.items()}
        return [validate_mnist(raw.arrays, file_label=str(resolved.directory), sources=sources,
                               expected_train_rows=expected_rows.get("train_images") or expected_rows.get("archive_train"),
                               expected_test_rows=expected_rows.get("test_images") or expected_rows.get("archive_test"))]
    return [validate_frame(frame, resolved.dataset, file_label=str(resolved.files[role].path),
                           parameters={"row_count": expected_rows[role]})
            for role, frame in raw.frames.items()]


# --------------------------------------------------------------------------- reporting


def raise_if_failed(reports: list[ValidationReport]) -> None:
    """Raise ValidationFailed with one paragraph describing every failed file; do nothing if all passed."""
    failed = [r for r in reports if not r.success]
    if not failed:
        return
    files = ", ".join(r.file for r in failed)
    details = " ".join(r.summary(max_failures=MAX_FAILURES_SHOWN) for r in failed)
    which, it = ("This data file is", "it") if len(failed) == 1 else ("These data files are", "each")
    error = ValidationFailed(
        f"Data validation failed for {len(failed)} of {len(reports)} files ({files}). {details} "
        f"{which} probably altered or truncated: compare {it} with the canonical source (size and checksum in the "
        "data catalog), then re-download it or fix the data directory before running the study again."
    )
    error.reports = failed  # type: ignore[attr-defined]  # for callers that want the structured reports
    raise error
