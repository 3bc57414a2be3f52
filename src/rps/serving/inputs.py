"""Request inputs and stored observations to feature rows, for the model read once per request.

Checks that need no model (finite numbers, one input kind, ``issue_times`` length, hourly
consecutive observation times) are done by the request schemas (:mod:`rps.serving.schemas`);
what is left here depends on the served model: its feature names and its feature spec.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

import numpy as np

from rps.features.online import build_horizon_rows
from rps.features.spec import HORIZON, FeatureError
from rps.serving.errors import InputError, UnavailableError, error_item
from rps.serving.schemas import Observation
from rps.serving.served import ServedModel
from rps.serving.stored import StoredWindow

MAX_ERRORS = 20


def epoch(moment: datetime) -> int:
    """Unix seconds of a datetime (naive means UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def rows_to_matrix(
    model: ServedModel, rows: list[dict[str, float]], *, max_rows: int
) -> np.ndarray:
    """Feature rows as a ``(n, n_features)`` array in the model's order.

    Raises:
        InputError: a row lacks a feature or has an unknown one, or the batch is too big.
    """
    if len(rows) > max_rows:
        raise InputError.at(
            ["rows"],
            f"batch has {len(rows)} rows, at most max_batch_rows={max_rows} are accepted",
            "too_long",
        )
    names = model.feature_names
    index = model.feature_index
    matrix = np.empty((len(rows), len(names)))
    errors: list[dict[str, Any]] = []
    for i, row in enumerate(rows):
        if row.keys() == index.keys():
            matrix[i] = [row[name] for name in names]
            continue
        errors += [
            error_item(
                ["rows", i, key],
                f"unknown feature {key!r} (GET /model/info lists the features)",
                "unknown_feature",
            )
            for key in row
            if key not in index
        ]
        errors += [
            error_item(["rows", i, name], f"feature {name!r} is missing", "missing")
            for name in names
            if name not in row
        ]
        if len(errors) >= MAX_ERRORS:
            break
    if errors:
        raise InputError(errors[:MAX_ERRORS])
    check_leads(model, matrix)
    return matrix


def row_matrix(model: ServedModel, row: dict[str, float]) -> np.ndarray | None:
    """One feature row as a ``(1, n_features)`` array in the model's order, or None unless the
    row holds exactly the model's features (:func:`rows_to_matrix` names what is wrong).

    The one-row path of :mod:`rps.serving.fast_predict`: the same array as
    :func:`rows_to_matrix`, built in one pass. The values must be numbers already.

    Raises:
        InputError: the row's lead time is not one the model forecasts (:func:`check_leads`).
    """
    names = model.feature_names
    if row.keys() != model.feature_index.keys():
        return None
    matrix = np.fromiter(map(row.__getitem__, names), float, len(names)).reshape(1, -1)
    check_leads(model, matrix)
    return matrix


def check_leads(model: ServedModel, matrix: np.ndarray) -> None:
    """Refuse feature rows whose ``horizon_hours`` feature (trajectory models) is not a whole
    number of hours the model forecasts.

    Raises:
        InputError: naming the row's ``horizon_hours``.
    """
    column = model.feature_index.get(HORIZON)
    if column is None:
        return
    for i, lead in enumerate(matrix[:, column].tolist()):
        if lead != int(lead):
            raise InputError.at(["rows", i, HORIZON], "must be a whole number of hours")
        check_horizon(model, int(lead), ["body", "rows", i, HORIZON])


def check_horizon(
    model: ServedModel, hours: int, loc: Sequence[str | int], *, trajectory: bool = False
) -> None:
    """Refuse a lead time (``trajectory``: every hour 1..``hours``) the model does not forecast.

    Raises:
        InputError: ``hours`` is beyond the model's ``max_horizon_hours``, or the model
            forecasts its ``horizon_hours`` only and ``hours`` is another one or a trajectory.
    """
    longest = model.max_horizon_hours
    single = model.bundle.max_horizon_hours is None
    if single and (trajectory or hours != longest):
        message = f"the served model forecasts +{longest} h only (no trajectory)"
    elif not 1 <= hours <= longest:
        message = f"the served model forecasts 1..{longest} hours ahead, not {hours}"
    else:
        return
    raise InputError([{"loc": list(loc), "msg": message, "type": "horizon_unavailable"}])


def observations_to_row(
    model: ServedModel, observations: Sequence[Observation], horizon_hours: int | None = None
) -> tuple[np.ndarray, datetime]:
    """The feature row for the newest hour of an observation window, and its issue time.

    The schema has checked that the times are consecutive hours, oldest first; only the newest
    ``window_hours`` observations are used.

    Args:
        model: the served model.
        observations: the window.
        horizon_hours: the lead time (None: the model's ``horizon_hours``).

    Raises:
        InputError: the window is too short for the model, lacks or adds variables, or the
            model does not forecast ``horizon_hours``.
    """
    spec = model.bundle.feature_spec
    horizon = spec.horizon_hours if horizon_hours is None else horizon_hours
    check_horizon(model, horizon, ["body", "horizon_hours"])
    need = spec.window_hours
    if len(observations) < need:
        raise InputError.at(
            ["observations"],
            f"observation window has {len(observations)} hours, the features need {need} "
            "consecutive hours",
            "too_short",
        )
    variables = spec.variables
    known = set(variables)
    offset = len(observations) - need
    values = np.empty((need, len(variables)))
    for j, obs in enumerate(observations[offset:]):
        present = obs.values
        unknown = sorted(set(present) - known)
        if unknown:
            raise InputError.at(
                ["observations", offset + j, unknown[0]],
                f"unknown variable {unknown[0]!r}; expected {list(variables)}",
                "unknown_variable",
            )
        for k, name in enumerate(variables):
            if name not in present:
                raise InputError.at(
                    ["observations", offset + j, name], f"variable {name!r} is missing", "missing"
                )
            values[j, k] = present[name]
    issue = datetime.fromtimestamp(epoch(observations[-1].time), tz=UTC)
    try:
        # a datetime is what the online path computes its time features from (no pandas)
        row = build_horizon_rows(values, spec, [horizon], issue_time=cast(Any, issue))[0]
    except FeatureError as exc:
        raise InputError.at(["observations"], str(exc)) from exc
    return row, issue


def row_leads(model: ServedModel, matrix: np.ndarray, horizon_hours: int | None) -> np.ndarray:
    """The lead time of each row: asked for, read from the rows' features, or the model's."""
    if horizon_hours is not None:
        return np.full(matrix.shape[0], horizon_hours)
    column = model.feature_index.get(HORIZON)
    if column is None:
        return np.full(matrix.shape[0], model.horizon_hours)
    return matrix[:, column].astype(int)


def stored_rows(model: ServedModel, window: StoredWindow, horizons: list[int]) -> np.ndarray:
    """The feature rows of the stored window's newest hour for each lead time.

    Raises:
        UnavailableError: the window has gaps, or the observations cannot make a row.
    """
    spec = model.bundle.feature_spec
    if not window.consecutive(spec.window_hours):
        raise UnavailableError(
            f"the newest {spec.window_hours} stored hours in {window.path} are incomplete "
            f"or have gaps; the forecast needs {spec.window_hours} consecutive hours"
        )
    try:
        issue = cast(Any, window.issue_time)
        return build_horizon_rows(window.values, spec, horizons, issue_time=issue)
    except FeatureError as exc:
        raise UnavailableError(f"stored observations cannot make a feature row: {exc}") from exc
