"""Weather sources behind one interface; :func:`make_source` picks one by setting."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rps.data.sources.base import FetchResult, SourceError, WeatherSource

if TYPE_CHECKING:
    from rps.params import Params
    from rps.settings import Settings

__all__ = ["FetchResult", "SourceError", "WeatherSource", "make_source"]


def make_source(settings: Settings, params: Params, name: str | None = None) -> WeatherSource:
    """The source named by ``name`` or by ``settings.source``."""
    name = name or settings.source
    if name == "replay":
        from rps.data.sources.replay import ReplaySource

        return ReplaySource.from_settings(settings, params)
    if name == "synthetic":
        from rps.data.sources.synthetic import SyntheticSource

        scenario = params.drift.scenario
        return SyntheticSource(
            variables=params.data.variables, drifts=[scenario] if scenario is not None else []
        )
    if name == "open_meteo":
        from rps.data.sources.open_meteo import OpenMeteoSource

        return OpenMeteoSource.from_settings(settings, params)
    raise SourceError(f"unknown source {name!r}: choose open_meteo, replay or synthetic")
