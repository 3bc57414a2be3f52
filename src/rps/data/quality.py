"""The quality gate: a raw file either passes every check or stops the pipeline.

Checks (all run, so one report names every problem):

* ``parse``: a readable, non-empty CSV with a parseable ``time`` column.
* ``schema``: exactly the expected columns (none missing, none extra), numeric variables.
* ``null_fraction``: at most ``quality.max_null_fraction`` missing per column.
* ``range``: physical limits from ``quality.ranges`` (pandera checks).
* ``duplicate_timestamps`` / ``monotonic_timestamps``.
* ``min_rows``, ``freshness`` (newest observation not older than the limit at collection
  time) and ``future_timestamps`` (nothing after the collection time).

On failure the report is saved as JSON next to the raw file, the raw file is left in place and
marked quarantined, and :class:`QualityGateError` carries the report.
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from rps.data.extract import sidecar
from rps.data.schema import TIME
from rps.files import write_atomic
from rps.params import Params

logger = logging.getLogger(__name__)
FUTURE_TOLERANCE = pd.Timedelta(minutes=59)


@dataclass(frozen=True)
class CheckFailure:
    """One failed check: which, where, what was seen and what is allowed."""

    check: str
    column: str | None
    observed: Any
    allowed: Any
    detail: str

    def __str__(self) -> str:
        where = f" [{self.column}]" if self.column else ""
        return (
            f"{self.check}{where}: {self.detail} (observed {self.observed}, allowed {self.allowed})"
        )


@dataclass
class QualityReport:
    """The outcome of the gate for one raw file."""

    raw_file: str
    checked_at: str
    rows: int
    checks_run: list[str] = field(default_factory=list)
    failures: list[CheckFailure] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["passed"] = self.passed
        return data

    def summary(self) -> str:
        if self.passed:
            return f"quality gate passed: {self.rows} rows, {len(self.checks_run)} checks"
        lines = [f"quality gate FAILED for {self.raw_file}:"]
        lines += [f"  - {failure}" for failure in self.failures]
        return "\n".join(lines)


class QualityGateError(RuntimeError):
    """The gate refused a raw file; ``report`` says why."""

    def __init__(self, report: QualityReport, report_path: Path | None = None) -> None:
        super().__init__(report.summary())
        self.report = report
        self.report_path = report_path


def _read_raw(payload: bytes, report: QualityReport) -> pd.DataFrame | None:
    report.checks_run.append("parse")
    try:
        frame = pd.read_csv(io.BytesIO(payload))
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        report.failures.append(CheckFailure("parse", None, "unreadable", "CSV", str(exc)))
        return None
    if frame.empty:
        report.failures.append(CheckFailure("parse", None, 0, ">= 1 row", "the file has no rows"))
        return None
    if TIME not in frame.columns:
        report.failures.append(CheckFailure("schema", TIME, "missing", "present", "no time column"))
        return None
    try:
        frame[TIME] = pd.to_datetime(frame[TIME], utc=True, format="ISO8601")
    except (ValueError, TypeError) as exc:
        report.failures.append(
            CheckFailure("parse", TIME, "unparseable", "ISO 8601 times", str(exc)[:200])
        )
        return None
    return frame


def _check_schema(frame: pd.DataFrame, variables: list[str], report: QualityReport) -> list[str]:
    report.checks_run.append("schema")
    expected = [TIME, *variables]
    missing = [c for c in expected if c not in frame.columns]
    extra = [c for c in frame.columns if c not in expected]
    if missing:
        report.failures.append(
            CheckFailure("schema", ",".join(missing), "missing", "present", "missing columns")
        )
    if extra:
        report.failures.append(
            CheckFailure("schema", ",".join(extra), "unexpected", "absent", "extra columns")
        )
    numeric = []
    for column in variables:
        if column not in frame.columns:
            continue
        if pd.api.types.is_numeric_dtype(frame[column]) and not pd.api.types.is_bool_dtype(
            frame[column]
        ):
            numeric.append(column)
        else:
            sample = frame[column].dropna().astype(str).head(3).tolist()
            report.failures.append(
                CheckFailure(
                    "schema", column, str(frame[column].dtype), "float", f"non-numeric {sample}"
                )
            )
    return numeric


def _check_ranges(
    frame: pd.DataFrame, params: Params, columns: list[str], report: QualityReport
) -> None:
    import pandera.pandas as pa

    report.checks_run.append("range")
    checks = {
        column: pa.Column(
            float,
            pa.Check.in_range(low, high),
            nullable=True,
            coerce=True,
        )
        for column, (low, high) in params.quality.ranges.items()
        if column in columns
    }
    schema = pa.DataFrameSchema(checks, strict=False)
    try:
        schema.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases
        for column, group in cases.groupby("column"):
            low, high = params.quality.ranges[str(column)]
            values = pd.to_numeric(group["failure_case"], errors="coerce")
            report.failures.append(
                CheckFailure(
                    "range",
                    str(column),
                    f"{len(group)} values in [{values.min()}, {values.max()}]",
                    f"[{low}, {high}]",
                    "values outside physical limits",
                )
            )


def validate_frame(
    frame: pd.DataFrame, params: Params, *, now: pd.Timestamp, report: QualityReport
) -> QualityReport:
    """Run every check on a parsed frame, recording failures in ``report``."""
    variables = list(params.data.variables)
    numeric = _check_schema(frame, variables, report)

    report.checks_run.append("null_fraction")
    limit = params.quality.max_null_fraction
    for column in [TIME, *variables]:
        if column not in frame.columns:
            continue
        fraction = float(frame[column].isna().mean())
        if fraction > limit:
            report.failures.append(
                CheckFailure(
                    "null_fraction",
                    column,
                    round(fraction, 4),
                    f"<= {limit}",
                    "all values missing" if fraction == 1.0 else "too many missing values",
                )
            )
    _check_ranges(frame, params, numeric, report)

    times = frame[TIME].dropna()
    report.checks_run.append("duplicate_timestamps")
    duplicated = times[times.duplicated()]
    if len(duplicated):
        report.failures.append(
            CheckFailure(
                "duplicate_timestamps",
                TIME,
                f"{len(duplicated)} duplicates",
                "none",
                f"first duplicate {duplicated.iloc[0].isoformat()}",
            )
        )
    report.checks_run.append("monotonic_timestamps")
    backwards = int((times.diff() < pd.Timedelta(0)).sum())
    if backwards:
        report.failures.append(
            CheckFailure(
                "monotonic_timestamps",
                TIME,
                f"{backwards} steps back",
                "none",
                "timestamps are not increasing",
            )
        )
    report.checks_run.append("min_rows")
    if len(frame) < params.quality.min_rows:
        report.failures.append(
            CheckFailure(
                "min_rows", None, len(frame), f">= {params.quality.min_rows}", "too few rows"
            )
        )
    if len(times):
        newest = times.max()
        report.checks_run.append("future_timestamps")
        if newest > now + FUTURE_TOLERANCE:
            report.failures.append(
                CheckFailure(
                    "future_timestamps",
                    TIME,
                    newest.isoformat(),
                    f"<= {now.isoformat()}",
                    "observations dated after collection",
                )
            )
        report.checks_run.append("freshness")
        age_h = (now - newest) / pd.Timedelta(hours=1)
        if age_h > params.quality.freshness_hours:
            report.failures.append(
                CheckFailure(
                    "freshness",
                    TIME,
                    f"{age_h:.1f} h old",
                    f"<= {params.quality.freshness_hours} h",
                    f"newest observation {newest.isoformat()} is stale",
                )
            )
    return report


def check_raw_file(raw_path: Path, params: Params, *, now: pd.Timestamp) -> QualityReport:
    """Run the gate on a raw file without side effects."""
    now = pd.Timestamp(now)
    now = now.tz_localize("UTC") if now.tzinfo is None else now.tz_convert("UTC")
    report = QualityReport(raw_file=str(raw_path), checked_at=now.isoformat(), rows=0)
    try:
        payload = raw_path.read_bytes()
    except OSError as exc:
        report.checks_run.append("parse")
        report.failures.append(CheckFailure("parse", None, "unreadable", "a file", str(exc)))
        return report
    frame = _read_raw(payload, report)
    if frame is None:
        return report
    report.rows = len(frame)
    return validate_frame(frame, params, now=now, report=report)


def read_checked(raw_path: Path) -> pd.DataFrame:
    """A raw file that passed the gate, as a frame with UTC ``time``."""
    frame = pd.read_csv(raw_path)
    frame[TIME] = pd.to_datetime(frame[TIME], utc=True, format="ISO8601")
    return frame


def run_quality_gate(raw_path: Path, params: Params, *, now: pd.Timestamp) -> QualityReport:
    """The mandatory gate: save the report next to the raw file; quarantine and raise on failure.

    Raises:
        QualityGateError: one or more checks failed; the raw file stays where it is, with a
            ``.quarantined`` marker beside it.
    """
    report = check_raw_file(raw_path, params, now=now)
    report_path = sidecar(raw_path, "quality.json")
    write_atomic(report_path, json.dumps(report.to_dict(), indent=2, default=str).encode())
    if not report.passed:
        marker = sidecar(raw_path, "quarantined")
        write_atomic(marker, json.dumps({"report": str(report_path)}).encode())
        logger.error("%s", report.summary())
        raise QualityGateError(report, report_path)
    sidecar(raw_path, "quarantined").unlink(missing_ok=True)
    logger.info("%s", report.summary())
    return report
