"""PNG plots of a model's holdout behaviour (matplotlib, headless Agg backend)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

#: The forecast-versus-actual plot shows at most this many of the newest holdout hours.
FORECAST_PLOT_HOURS = 24 * 14


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    plt = _pyplot()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _save_line_chart(
    fig: Any, ax: Any, path: Path, *, xlabel: str, ylabel: str, title: str
) -> Path:
    """Label a chart of one line per series, add its legend and save it."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(fig, path)


def forecast_vs_actual(
    path: Path,
    target_times: pd.DatetimeIndex,
    y_true: np.ndarray,
    forecasts: Mapping[str, np.ndarray],
    *,
    interval: tuple[np.ndarray, np.ndarray] | None = None,
    title: str = "Holdout: forecast vs actual",
) -> Path:
    """Actual target against one or more forecasts over the newest holdout fortnight."""
    plt = _pyplot()
    keep = slice(max(0, len(y_true) - FORECAST_PLOT_HOURS), len(y_true))
    times = target_times[keep]
    fig, ax = plt.subplots(figsize=(11, 4))
    if interval is not None:
        ax.fill_between(
            times, interval[0][keep], interval[1][keep], alpha=0.25, label="interval", step=None
        )
    ax.plot(times, np.asarray(y_true)[keep], color="black", linewidth=1.2, label="actual")
    for name, values in forecasts.items():
        ax.plot(times, np.asarray(values)[keep], linewidth=1.0, label=name)
    ax.set_title(title)
    ax.set_ylabel("target")
    ax.legend(loc="upper left", fontsize=8)
    fig.autofmt_xdate()
    return _save(fig, path)


def residual_histogram(
    path: Path, residuals: np.ndarray, *, interval: Mapping[str, float] | None = None
) -> Path:
    """Histogram of holdout residuals ``y - pred`` with the interval offsets marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.hist(np.asarray(residuals, dtype=float), bins=50, color="steelblue", alpha=0.8)
    if interval is not None:
        for key in ("lower", "upper"):
            ax.axvline(float(interval[key]), color="red", linestyle="--", linewidth=1)
    ax.set_title("Holdout residuals (y - forecast)")
    ax.set_xlabel("residual")
    return _save(fig, path)


def error_by_hour(path: Path, by_model: Mapping[str, Mapping[int, float]]) -> Path:
    """RMSE per hour of day of the target time, one line per model."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4))
    for name, by_hour in by_model.items():
        hours = sorted(by_hour)
        ax.plot(hours, [by_hour[h] for h in hours], marker="o", markersize=3, label=name)
    ax.set_xticks(range(0, 24, 3))
    return _save_line_chart(
        fig,
        ax,
        path,
        xlabel="hour of day (UTC, target time)",
        ylabel="RMSE",
        title="Holdout error by hour of day",
    )


def feature_importance(
    path: Path, names: Sequence[str], importance: np.ndarray, *, title: str, top: int = 20
) -> Path:
    """Horizontal bars of the ``top`` most important features."""
    plt = _pyplot()
    values = np.asarray(importance, dtype=float)
    order = np.argsort(values)[::-1][:top][::-1]
    fig, ax = plt.subplots(figsize=(8, max(3.0, 0.3 * len(order) + 1)))
    ax.barh([names[i] for i in order], values[order], color="seagreen")
    ax.set_title(title)
    return _save(fig, path)


def skill_by_horizon(path: Path, metrics_by_horizon: Sequence[Mapping[str, float]]) -> Path:
    """Holdout RMSE by horizon: the model against persistence and seasonal naive."""
    plt = _pyplot()
    hours = [int(m["horizon_hours"]) for m in metrics_by_horizon]
    fig, ax = plt.subplots(figsize=(8, 4))
    for key, label in (
        ("rmse", "model"),
        ("persistence_rmse", "persistence"),
        ("seasonal_naive_rmse", "seasonal naive"),
    ):
        ax.plot(hours, [m[key] for m in metrics_by_horizon], marker=".", label=label)
    return _save_line_chart(
        fig, ax, path, xlabel="horizon (h)", ylabel="holdout RMSE", title="Skill by horizon"
    )


def coverage_by_horizon(
    path: Path, metrics_by_horizon: Sequence[Mapping[str, float]], *, alpha: float
) -> Path:
    """Holdout coverage of the interval by horizon (target ``1 - alpha``) and its mean width."""
    plt = _pyplot()
    hours = [int(m["horizon_hours"]) for m in metrics_by_horizon]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(hours, [m["coverage"] for m in metrics_by_horizon], marker=".", label="coverage")
    ax.axhline(1 - alpha, color="red", linestyle="--", linewidth=1, label=f"{1 - alpha:.0%}")
    ax.set_ylim(0.5, 1.0)
    ax.set_xlabel("horizon (h)")
    ax.set_ylabel("holdout coverage")
    width = ax.twinx()
    width.plot(
        hours, [m["mean_width"] for m in metrics_by_horizon], color="grey", label="mean width"
    )
    width.set_ylabel("mean width")
    ax.set_title("Interval coverage by horizon")
    ax.legend(loc="lower left", fontsize=8)
    return _save(fig, path)


def fan_chart(
    path: Path,
    target_times: pd.DatetimeIndex,
    *,
    prediction: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    actual: np.ndarray,
    title: str,
) -> Path:
    """One trajectory with its interval band against what happened."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.fill_between(target_times, lower, upper, alpha=0.25, label="interval")
    ax.plot(target_times, prediction, linewidth=1.2, label="forecast")
    ax.plot(target_times, actual, color="black", linewidth=1.0, label="actual")
    ax.set_title(title)
    ax.set_ylabel("target")
    ax.legend(loc="upper left", fontsize=8)
    fig.autofmt_xdate()
    return _save(fig, path)
