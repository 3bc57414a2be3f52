"""``rps model compare``: two registered versions on the candidate's holdout, as a report."""

from __future__ import annotations

import math
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from rps.features.build import build_features
from rps.files import write_atomic
from rps.models import evaluation as ev
from rps.models.bundle import ModelBundle, load_bundle
from rps.models.errors import RegistryError
from rps.models.gate import (
    HOLDOUT_OBSERVATIONS,
    MIN_COMPARE_ROWS,
    GateDecision,
    bundle_holdout,
    decide_promotion,
    predict_bundle,
)
from rps.models.registry import CHAMPION, download_bundle, resolve_version
from rps.models.tracking import mlflow_errors
from rps.settings import Settings

if TYPE_CHECKING:
    from rps.params import Params


@dataclass
class Comparison:
    """``rps model compare``: two versions on the candidate's holdout."""

    candidate_version: str
    against_version: str
    against_ref: str
    decision: GateDecision
    metrics: dict[str, dict[str, float]]  # model label -> metric -> value
    n: int
    holdout_start: str
    holdout_end: str
    report: Path | None = None
    plots: list[Path] = field(default_factory=list)

    @property
    def candidate_worse(self) -> bool:
        """The gate would refuse the candidate (``rps model compare`` exits 1)."""
        return not self.decision.promote


def _served_bounds(
    bundle: ModelBundle, observations: pd.DataFrame, issue_times: pd.DatetimeIndex
) -> tuple[np.ndarray, np.ndarray]:
    """The interval a bundle serves at ``issue_times`` (its conditional one when it has it)."""
    features = build_features(observations, bundle.feature_spec, with_target=False)
    rows = features.reindex(issue_times)[bundle.feature_names].to_numpy(dtype=float)
    _, lower, upper = bundle.predict_with_interval(rows)
    return lower, upper


def _scores(
    y: np.ndarray,
    pred: np.ndarray,
    y_now: np.ndarray,
    hours: np.ndarray,
    bounds: tuple[np.ndarray, np.ndarray] | None,
) -> dict[str, float]:
    out = ev.point_metrics(y, pred, y_now)
    if bounds is not None:
        out["interval_coverage"] = ev.interval_coverage(y, *bounds)
    for hour, value in ev.error_by_hour(y, pred, hours).items():
        out[f"rmse_hour_{hour:02d}"] = value
    return out


def compare_versions(
    settings: Settings,
    params: Params,
    candidate: str,
    against: str = CHAMPION,
    *,
    output: Path | None = None,
) -> Comparison:
    """Score two versions on the candidate's holdout and apply the promotion rule.

    The candidate's training run stores the holdout observations
    (:data:`HOLDOUT_OBSERVATIONS`); both bundles rebuild their features from them.

    Raises:
        ModelNotFoundError: an unknown version or alias.
        RegistryError: both refer to the same version, the candidate run lacks its holdout
            data, or the models forecast different targets or horizons.
    """
    cand_mv = resolve_version(settings, candidate)
    against_mv = resolve_version(settings, against)
    if str(cand_mv.version) == str(against_mv.version):
        raise RegistryError(
            f"--candidate {candidate} and --against {against} are the same version "
            f"(v{cand_mv.version}): a model cannot be compared with itself"
        )
    import mlflow

    with tempfile.TemporaryDirectory(prefix="rps-compare-") as tmp:
        root = Path(tmp)
        cand = load_bundle(download_bundle(settings, str(cand_mv.version), dst=root / "candidate"))
        other = load_bundle(
            download_bundle(settings, str(against_mv.version), dst=root / "against")
        )
        if not cand_mv.run_id:
            raise RegistryError(f"version {cand_mv.version} has no training run")
        with mlflow_errors(f"holdout data of version {cand_mv.version} (run {cand_mv.run_id})"):
            local = mlflow.artifacts.download_artifacts(
                run_id=cand_mv.run_id,
                artifact_path=HOLDOUT_OBSERVATIONS,
                dst_path=str(root / "obs"),
            )
        observations = pd.read_parquet(local)
    for key in ("holdout_start", "holdout_end"):
        if key not in cand.lineage:
            raise RegistryError(f"version {cand_mv.version} records no {key} in its lineage")
    spec = cand.feature_spec
    if (other.feature_spec.target, other.feature_spec.horizon_hours) != (
        spec.target,
        spec.horizon_hours,
    ):
        raise RegistryError(
            f"versions {cand_mv.version} and {against_mv.version} forecast different "
            "targets or horizons"
        )
    issue_times, y, y_now = bundle_holdout(cand, observations)
    cand_pred = predict_bundle(cand, observations, issue_times)
    other_pred = predict_bundle(other, observations, issue_times)
    ok = np.isfinite(cand_pred) & np.isfinite(other_pred)
    if ok.sum() < MIN_COMPARE_ROWS:
        raise RegistryError(f"only {int(ok.sum())} holdout rows are forecast by both versions")
    issue_times, y, y_now = issue_times[ok], y[ok], y_now[ok]
    cand_pred, other_pred = cand_pred[ok], other_pred[ok]
    promotion = params.train.promotion
    decision = decide_promotion(
        y,
        cand_pred,
        y_now,
        other_pred,
        horizon=spec.horizon_hours,
        significance=promotion.significance,
        margin=promotion.non_inferiority_margin,
        candidate_is_persistence=cand.kind == "persistence",
        champion_version=str(against_mv.version),
    )
    target_times = issue_times + pd.Timedelta(hours=spec.horizon_hours)
    hours = np.asarray(target_times.hour)
    cand_label = f"v{cand_mv.version} ({cand.kind})"
    other_label = f"v{against_mv.version} ({other.kind})"
    metrics = {
        cand_label: _scores(
            y, cand_pred, y_now, hours, _served_bounds(cand, observations, issue_times)
        ),
        other_label: _scores(
            y, other_pred, y_now, hours, _served_bounds(other, observations, issue_times)
        ),
        "persistence": _scores(y, y_now, y_now, hours, None),
    }
    result = Comparison(
        candidate_version=str(cand_mv.version),
        against_version=str(against_mv.version),
        against_ref=against,
        decision=decision,
        metrics=metrics,
        n=int(ok.sum()),
        holdout_start=str(cand.lineage["holdout_start"]),
        holdout_end=str(cand.lineage["holdout_end"]),
    )
    if output is not None:
        _write_report(
            output,
            result,
            target_times=target_times,
            y=y,
            forecasts={cand_label: cand_pred, other_label: other_pred, "persistence": y_now},
            hours=hours,
        )
    return result


def _fmt(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.4g}"


def _write_report(
    output: Path,
    result: Comparison,
    *,
    target_times: pd.DatetimeIndex,
    y: np.ndarray,
    forecasts: Mapping[str, np.ndarray],
    hours: np.ndarray,
) -> None:
    from rps.models import plots

    output.parent.mkdir(parents=True, exist_ok=True)
    stem = output.with_suffix("")
    labels = list(result.metrics)
    cand_label, other_label = labels[0], labels[1]
    forecast_png = plots.forecast_vs_actual(
        Path(f"{stem}_forecast.png"),
        target_times,
        y,
        forecasts,
        title="Holdout: forecasts vs actual",
    )
    by_hour = {label: ev.error_by_hour(y, pred, hours) for label, pred in forecasts.items()}
    hour_png = plots.error_by_hour(Path(f"{stem}_error_by_hour.png"), by_hour)
    result.plots = [forecast_png, hour_png]
    d = result.decision
    rows = [
        "rmse",
        "mae",
        "r2",
        "mape",
        "smape",
        "skill_vs_persistence",
        "directional_accuracy",
        "interval_coverage",
    ]
    lines = [
        f"# Model comparison: v{result.candidate_version} vs {result.against_ref} "
        f"(v{result.against_version})",
        "",
        f"Holdout of the candidate: {result.holdout_start} .. {result.holdout_end} "
        f"({result.n} forecasts, issue times).",
        "",
        f"**Gate: {'PASS - would promote' if d.promote else 'REFUSE - candidate is worse'}** "
        f"({d.rule}): {d.reason}",
        "",
        f"| metric | {cand_label} | {other_label} | delta | persistence |",
        "|---|---:|---:|---:|---:|",
    ]
    for key in rows:
        a = result.metrics[cand_label].get(key, float("nan"))
        b = result.metrics[other_label].get(key, float("nan"))
        p = result.metrics["persistence"].get(key, float("nan"))
        lines.append(f"| {key} | {_fmt(a)} | {_fmt(b)} | {_fmt(a - b)} | {_fmt(p)} |")
    lines += ["", "## Diebold-Mariano tests (squared error, one-sided)", ""]
    lines += ["| comparison | statistic | p (candidate better) | p (candidate worse) | lag |"]
    lines += ["|---|---:|---:|---:|---:|"]
    for label, dm in (
        (f"vs {other_label}", d.dm_vs_champion),
        ("vs persistence", d.dm_vs_persistence),
    ):
        if dm is not None:
            lines.append(
                f"| {label} | {_fmt(dm.statistic)} | {_fmt(dm.p_value_better)} | "
                f"{_fmt(dm.p_value_worse)} | {dm.lag} |"
            )
    lines += [
        "",
        f"Significance {d.significance}, non-inferiority margin {d.margin:.0%}.",
        "",
        f"![forecasts]({forecast_png.name})",
        "",
        f"![error by hour]({hour_png.name})",
        "",
    ]
    write_atomic(output, "\n".join(lines))
    result.report = output
