"""Drift scenarios applied to source data: pure functions of an hourly frame and a scenario.

A :class:`~rps.params.DriftScenario` changes ``variables`` from ``start`` (until ``end``, if
set). Every kind is causal: the drifted value at a time depends only on rows at or before it,
from ``start - CONTEXT_HOURS`` on. So a source that applies the scenario to a frame reaching
back to that point returns the same drifted values whatever range it was asked for
(:func:`context_start`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from rps.data.schema import TIME
from rps.params import DriftScenario

CONTEXT_HOURS = 24
"""History the kinds read before a time: the trailing 24 h mean (``variance``)."""


class DriftScenarioError(ValueError):
    """A scenario cannot be applied to this frame (unknown variable, missing time column)."""


def context_start(scenario: DriftScenario, start: pd.Timestamp) -> pd.Timestamp:
    """The first hour a frame must hold so that rows from ``start`` on drift exactly.

    Args:
        scenario: The scenario.
        start: The first hour the caller wants.

    Returns:
        ``start`` itself when the scenario begins after it plus its reach, else the earlier of
        ``start`` and the scenario's start, less :data:`CONTEXT_HOURS`.
    """
    onset = pd.Timestamp(scenario.start)
    reach = pd.Timedelta(hours=max(CONTEXT_HOURS, int(scenario.magnitude or 0)))
    return min(start, onset) - reach


def check_scenario(scenario: DriftScenario, columns: Sequence[str]) -> None:
    """Refuse a scenario naming variables the data lacks.

    Raises:
        DriftScenarioError: naming the unknown variables and the known ones.
    """
    unknown = sorted(set(scenario.variables) - set(columns))
    if unknown:
        raise DriftScenarioError(
            f"drift scenario {scenario.kind!r} names unknown variable(s) {unknown}; "
            f"the data has {sorted(c for c in columns if c != TIME)}"
        )


def apply_drift(frame: pd.DataFrame, scenario: DriftScenario) -> pd.DataFrame:
    """A copy of ``frame`` with the scenario applied.

    Args:
        frame: Hourly rows sorted by ``time`` (tz-aware UTC), one column per variable.
        scenario: What to change, where and from when.

    Returns:
        The drifted copy (rows and columns unchanged in number and order).

    Raises:
        DriftScenarioError: the frame has no ``time`` column or lacks a scenario variable.
    """
    if TIME not in frame.columns:
        raise DriftScenarioError(f"drift scenario needs a {TIME!r} column")
    check_scenario(scenario, list(frame.columns))
    out = frame.copy()
    times = pd.DatetimeIndex(out[TIME])
    start = pd.Timestamp(scenario.start)
    active = np.asarray(times >= start)
    if scenario.end is not None:
        active &= np.asarray(times < pd.Timestamp(scenario.end))
    if not active.any():
        return out
    hours_in = np.asarray((times - start) / pd.Timedelta(hours=1), dtype=float)
    for name in scenario.variables:
        values = out[name].to_numpy(dtype=float, copy=True)
        out[name] = _drift_column(values, times, hours_in, active, scenario)
    return out


def _drift_column(
    values: np.ndarray,
    times: pd.DatetimeIndex,
    hours_in: np.ndarray,
    active: np.ndarray,
    scenario: DriftScenario,
) -> np.ndarray:
    magnitude = float(scenario.magnitude or 0.0)
    drifted = values.copy()
    if scenario.kind == "bias":
        drifted[active] += magnitude
    elif scenario.kind == "mean_shift":
        ramp = np.clip((hours_in + 1.0) / scenario.ramp_hours, 0.0, 1.0)
        drifted[active] += magnitude * ramp[active]
    elif scenario.kind == "variance":
        level = pd.Series(values, index=times).rolling("24h", min_periods=1).mean().to_numpy()
        drifted[active] = level[active] + magnitude * (values[active] - level[active])
    elif scenario.kind == "daily_cycle":
        delayed = pd.Series(values, index=times).shift(freq=pd.Timedelta(hours=magnitude))
        drifted[active] = delayed.reindex(times).to_numpy()[active]
    elif scenario.kind == "stuck":
        at_onset = times <= pd.Timestamp(scenario.start)
        known = np.flatnonzero(np.asarray(at_onset) & np.isfinite(values))
        drifted[active] = values[known[-1]] if known.size else np.nan
    elif scenario.kind == "missing":
        phase = np.floor(hours_in).astype(int) % scenario.every_hours
        drifted[active & (phase < scenario.burst_hours)] = np.nan
    return drifted


def drifted_range(
    rows_for: Callable[[pd.DatetimeIndex], pd.DataFrame],
    start: pd.Timestamp,
    end: pd.Timestamp,
    scenarios: Sequence[DriftScenario],
) -> pd.DataFrame:
    """The hourly rows ``start..end`` of a source, with every scenario applied.

    The rows are generated from the earliest :func:`context_start` on, drifted, then cut, so
    the result does not depend on the range asked for.

    Args:
        rows_for: The source's clean rows for given hours (a ``time`` column first).
        start: First hour (UTC, on the hour).
        end: Last hour, inclusive.
        scenarios: Applied in order.
    """
    if start > end:
        return rows_for(pd.DatetimeIndex([], tz="UTC"))
    scenarios = [s for s in scenarios if pd.Timestamp(s.start) <= end]
    first = min([start, *(context_start(s, start) for s in scenarios)])
    frame = rows_for(pd.date_range(first, end, freq="h"))
    for scenario in scenarios:
        frame = apply_drift(frame, scenario)
    return frame[frame[TIME] >= start].reset_index(drop=True)
