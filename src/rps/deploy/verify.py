"""Post-deploy verification of a running prediction service.

Four checks, each a function returning a :class:`CheckResult` (so a test can run them one by
one against a stub server), run in order by :func:`verify_deployment`:

1. ``health``: ``GET /health`` answers 200 with ``status: ok`` (waiting up to ``wait_s`` for a
   service that is still starting).
2. ``model_info``: ``GET /model/info`` reports the expected version (and digest, if given).
3. ``prediction``: ``POST /predict`` with one feature row (from the bundle's reference sample, or
   a window of replayed observations) gives a finite forecast inside physical bounds.
4. ``metrics``: ``GET /metrics`` is a Prometheus exposition that holds ``api_requests_total``.

A failed check does not stop the others (the report says everything that is wrong), except
that nothing else runs when the service never becomes healthy.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from rps.deploy import DeployError

logger = logging.getLogger(__name__)

DEFAULT_BOUNDS = (-90.0, 60.0)  # degC: the physical range of temperature_2m in params.yaml
REQUIRED_METRICS = ("api_requests_total",)


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check.

    Attributes:
        name: ``health``, ``model_info``, ``prediction`` or ``metrics``.
        ok: Whether it passed.
        detail: What was seen (on failure: the reason).
    """

    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        """``PASS name: detail`` or ``FAIL name: detail``."""
        return f"{'PASS' if self.ok else 'FAIL'} {self.name}: {self.detail}"


@dataclass
class VerifyReport:
    """Every check run against one service."""

    url: str
    expect_version: str
    checks: list[CheckResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(check.ok for check in self.checks)

    @property
    def failures(self) -> list[CheckResult]:
        return [check for check in self.checks if not check.ok]

    def summary(self) -> str:
        """One line per check, then the verdict."""
        lines = [check.line() for check in self.checks]
        verdict = "verified" if self.ok else "NOT verified"
        lines.append(f"{self.url}: {verdict} (expected model version {self.expect_version})")
        return "\n".join(lines)

    def reason(self) -> str:
        """The failed checks in one line (empty when verified)."""
        return "; ".join(f"{c.name}: {c.detail}" for c in self.failures)


# the checks ---------------------------------------------------------------------------------
def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def check_health(client: httpx.Client, *, wait_s: float = 0.0, poll_s: float = 0.5) -> CheckResult:
    """``GET /health`` is 200 with ``status: ok``, retried for up to ``wait_s`` seconds.

    Args:
        client: A client whose ``base_url`` is the service.
        wait_s: How long to keep retrying while the service is down or still loading.
        poll_s: Pause between attempts.
    """
    deadline = time.monotonic() + max(0.0, wait_s)
    attempts = 0
    while True:
        attempts += 1
        try:
            response = client.get("/health")
            body = _json(response)
            if (
                response.status_code == 200
                and isinstance(body, dict)
                and body.get("status") in ("ok", "degraded")
            ):
                version = body.get("model_version")
                return CheckResult("health", True, f"ok (model version {version})")
            detail = body.get("detail") if isinstance(body, dict) else None
            reason = f"HTTP {response.status_code}" + (f": {detail}" if detail else "")
        except httpx.HTTPError as exc:
            reason = f"unreachable: {type(exc).__name__}: {exc}"
        if time.monotonic() >= deadline:
            suffix = f" after {attempts} attempts" if attempts > 1 else ""
            return CheckResult("health", False, f"{reason}{suffix}")
        time.sleep(poll_s)


def check_model_info(
    client: httpx.Client, expect_version: str, *, expect_digest: str | None = None
) -> tuple[CheckResult, dict[str, Any]]:
    """``GET /model/info`` reports ``expect_version`` (and ``expect_digest``, if given).

    Returns:
        The result and the info body (empty when unavailable), which the prediction check
        uses for the feature names.
    """
    try:
        response = client.get("/model/info")
    except httpx.HTTPError as exc:
        return CheckResult("model_info", False, f"unreachable: {exc}"), {}
    info = _json(response)
    if response.status_code != 200 or not isinstance(info, dict):
        return CheckResult("model_info", False, f"HTTP {response.status_code}"), {}
    version = str(info.get("version"))
    if version != str(expect_version):
        return (
            CheckResult(
                "model_info",
                False,
                f"serving version {version}, expected {expect_version} "
                f"(checksum {str(info.get('checksum', ''))[:12]}, source {info.get('source')})",
            ),
            info,
        )
    checksum = str(info.get("checksum", ""))
    if expect_digest and checksum != expect_digest:
        return (
            CheckResult(
                "model_info",
                False,
                f"version {version} but checksum {checksum[:12]}, expected {expect_digest[:12]}",
            ),
            info,
        )
    return (
        CheckResult("model_info", True, f"version {version}, {info.get('kind')}, {checksum[:12]}"),
        info,
    )


def check_prediction(
    client: httpx.Client,
    payload: Mapping[str, Any] | None,
    *,
    bounds: tuple[float, float] = DEFAULT_BOUNDS,
    expect_version: str | None = None,
) -> CheckResult:
    """``POST /predict`` gives finite forecasts inside ``bounds``.

    Args:
        client: A client whose ``base_url`` is the service.
        payload: The request body (``{"rows": [...]}`` or ``{"observations": [...]}``); None
            when no input could be built (the check fails and says so).
        bounds: Inclusive physical range of the forecast (degC for temperature).
        expect_version: When given, the response's ``model_version`` must match.
    """
    if payload is None:
        return CheckResult("prediction", False, "no input row available to test with")
    try:
        response = client.post("/predict", json=dict(payload))
    except httpx.HTTPError as exc:
        return CheckResult("prediction", False, f"unreachable: {exc}")
    body = _json(response)
    if response.status_code != 200 or not isinstance(body, dict):
        detail = body.get("detail") if isinstance(body, dict) else response.text[:200]
        return CheckResult("prediction", False, f"HTTP {response.status_code}: {detail}")
    problem = _prediction_problem(body, bounds, expect_version)
    if problem:
        return CheckResult("prediction", False, problem)
    first = body["predictions"][0]
    return CheckResult(
        "prediction",
        True,
        f"{first['prediction']:.2f} [{first['lower']:.2f}, {first['upper']:.2f}] "
        f"from version {body.get('model_version')}",
    )


def _prediction_problem(
    body: Mapping[str, Any], bounds: tuple[float, float], expect_version: str | None
) -> str | None:
    """What is wrong with a ``POST /predict`` answer (None: nothing)."""
    predictions = body.get("predictions") or []
    if not predictions:
        return "the response holds no prediction"
    low, high = bounds
    for item in predictions:
        for key in ("prediction", "lower", "upper"):
            value = item.get(key)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
            ):
                return f"{key} is not a finite number: {value!r}"
        point = float(item["prediction"])
        if not low <= point <= high:
            return f"prediction {point:.2f} outside the sane range [{low}, {high}]"
    served = body.get("model_version")
    if expect_version is not None and str(served) != str(expect_version):
        return f"answered by model version {served}, expected {expect_version}"
    return None


def check_metrics(
    client: httpx.Client, *, required: Sequence[str] = REQUIRED_METRICS
) -> CheckResult:
    """``GET /metrics`` parses as a Prometheus exposition holding every ``required`` sample."""
    try:
        response = client.get("/metrics")
    except httpx.HTTPError as exc:
        return CheckResult("metrics", False, f"unreachable: {exc}")
    if response.status_code != 200:
        return CheckResult("metrics", False, f"HTTP {response.status_code}")
    names: set[str] = set()
    try:
        from prometheus_client.parser import text_string_to_metric_families

        for family in text_string_to_metric_families(response.text):
            names.update(sample.name for sample in family.samples)
    except ImportError:  # the parser ships with prometheus-client (serve extra)
        names.update(
            line.split("{", 1)[0].split(" ", 1)[0]
            for line in response.text.splitlines()
            if line and not line.startswith("#")
        )
    except ValueError as exc:
        return CheckResult("metrics", False, f"not a Prometheus exposition: {exc}")
    missing = [name for name in required if name not in names]
    if missing:
        return CheckResult("metrics", False, f"missing {', '.join(missing)}")
    return CheckResult("metrics", True, f"{len(names)} samples, {', '.join(required)} present")


# inputs -------------------------------------------------------------------------------------
def row_from_bundle(
    directory: Path, feature_names: Sequence[str] | None = None
) -> dict[str, float]:
    """A feature row from a bundle's reference sample (else its reference means).

    Args:
        directory: A bundle folder (e.g. the ``model/`` folder the image was built from).
        feature_names: The served model's features (default: the bundle's own).

    Raises:
        DeployError: the bundle does not load, or lacks some of ``feature_names``.
    """
    from rps.models.bundle import BundleError, load_bundle

    try:
        bundle = load_bundle(directory, verify=False)
    except (BundleError, OSError, ValueError) as exc:
        raise DeployError(f"cannot read the bundle at {directory}: {exc}") from exc
    names = list(bundle.feature_names)
    sample = bundle.reference_sample
    if sample is not None and sample.ndim == 2 and sample.shape == (len(sample), len(names)):
        finite = [row for row in np.asarray(sample, dtype=float) if np.all(np.isfinite(row))]
        values = finite[0] if finite else None
    else:
        values = None
    if values is None:
        means = [bundle.reference_stats.get(n, {}).get("mean") for n in names]
        if any(m is None for m in means):
            raise DeployError(f"bundle at {directory} has no reference sample or feature means")
        values = np.asarray(means, dtype=float)
    row = {name: float(value) for name, value in zip(names, values, strict=True)}
    wanted = list(feature_names) if feature_names else names
    missing = [name for name in wanted if name not in row]
    if missing:
        raise DeployError(f"bundle at {directory} lacks served features {missing[:5]}")
    return {name: row[name] for name in wanted}


def observations_from_replay(
    hours: int, *, params_file: Path | None = None
) -> list[dict[str, Any]]:
    """The newest ``hours`` replayed observations as ``POST /predict`` takes them.

    Raises:
        DeployError: the replay source (pvlib, the pipeline extra) is unavailable.
    """
    try:
        import pandas as pd

        from rps.data.sources.replay import ReplaySource, default_recording, read_tmy3
        from rps.params import load_params
        from rps.settings import get_settings
    except ImportError as exc:
        raise DeployError(f"the replay source is unavailable: {exc}") from exc
    settings = get_settings()
    params = load_params(params_file or settings.params_file)
    source = ReplaySource(read_tmy3(default_recording()), variables=params.data.variables)
    end = pd.Timestamp.now(tz="UTC").floor("h")
    frame = source.fetch(end - pd.Timedelta(hours=hours + 24), end).frame.tail(hours)
    records: list[dict[str, Any]] = []
    for row in frame.to_dict(orient="records"):
        moment = pd.Timestamp(row.pop("time"))
        records.append({"time": moment.isoformat(), **{str(k): float(v) for k, v in row.items()}})
    return records


def target_bounds(params_file: Path | None) -> tuple[float, float]:
    """The physical range of the target from ``params.yaml`` (default -90..60 degC)."""
    if params_file is None or not params_file.exists():
        return DEFAULT_BOUNDS
    from rps.params import ParamsError, load_params

    try:
        params = load_params(params_file)
    except ParamsError:
        return DEFAULT_BOUNDS
    low, high = params.quality.ranges.get(params.data.target, DEFAULT_BOUNDS)
    return float(low), float(high)


# the whole verification ---------------------------------------------------------------------
def verify_deployment(
    url: str,
    expect_version: str,
    *,
    expect_digest: str | None = None,
    model_dir: Path | None = None,
    use_replay: bool = True,
    bounds: tuple[float, float] = DEFAULT_BOUNDS,
    wait_s: float = 0.0,
    timeout_s: float = 10.0,
    transport: httpx.BaseTransport | None = None,
) -> VerifyReport:
    """Run every check against the service at ``url``.

    Args:
        url: The service's base URL.
        expect_version: The model version it must serve.
        expect_digest: The bundle digest it must serve (optional).
        model_dir: A local copy of the bundle to take the test row from (optional).
        use_replay: Without a usable ``model_dir``, send a window of replayed observations.
        bounds: The sane forecast range.
        wait_s: How long to wait for ``/health`` (a service still starting).
        timeout_s: Per-request timeout.
        transport: An httpx transport (tests).

    Returns:
        The report; ``report.ok`` tells whether the release is verified.
    """
    report = VerifyReport(url=url, expect_version=str(expect_version))
    with httpx.Client(base_url=url, timeout=timeout_s, transport=transport) as client:
        health = check_health(client, wait_s=wait_s)
        report.checks.append(health)
        if not health.ok:
            return report
        info_check, info = check_model_info(client, expect_version, expect_digest=expect_digest)
        report.checks.append(info_check)
        payload = _payload(info, model_dir=model_dir, use_replay=use_replay)
        report.checks.append(
            check_prediction(
                client,
                payload,
                bounds=bounds,
                expect_version=expect_version if info_check.ok else None,
            )
        )
        report.checks.append(check_metrics(client))
    for check in report.checks:
        logger.info("verify %s: %s", url, check.line())
    return report


def _payload(
    info: Mapping[str, Any], *, model_dir: Path | None, use_replay: bool
) -> dict[str, Any] | None:
    features = info.get("features") if info else None
    names = [str(n) for n in features] if isinstance(features, list) else None
    problems: list[str] = []
    if model_dir is not None and (model_dir / "bundle.json").exists():
        try:
            return {"rows": [row_from_bundle(model_dir, names)]}
        except DeployError as exc:
            problems.append(str(exc))
    if use_replay:
        hours = int(info.get("window_hours") or 0) if info else 0
        if hours > 0:
            try:
                return {"observations": observations_from_replay(hours)}
            except DeployError as exc:
                problems.append(str(exc))
        else:
            problems.append("the service did not report its window_hours")
    for problem in problems:
        logger.warning("no test input: %s", problem)
    return None
