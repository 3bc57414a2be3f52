"""OpenMeteoSource against a local HTTP server answering in Open-Meteo's JSON shape."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from rps.data.sources import SourceError, make_source
from rps.data.sources.open_meteo import (
    OpenMeteoRequestError,
    OpenMeteoResponseError,
    OpenMeteoSource,
    OpenMeteoUnavailableError,
    parse_retry_after,
)
from rps.params import Params
from rps.settings import Settings

VARIABLES = ("temperature_2m", "relative_humidity_2m", "wind_speed_10m")
UNITS = {"temperature_2m": "°C", "relative_humidity_2m": "%", "wind_speed_10m": "km/h"}
NOW = pd.Timestamp("2024-06-15T12:30", tz="UTC")
TODAY = NOW.floor("D")
FORECAST = "/v1/forecast"
ARCHIVE = "/v1/archive"


@pytest.fixture(scope="module")
def make_httpserver() -> Iterator[HTTPServer]:
    """A threaded server (overrides the plugin's), so a stalled handler blocks no retry."""
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    yield server
    server.clear()
    if server.is_running():
        server.stop()


class Clock:
    """A settable UTC clock."""

    def __init__(self, now: pd.Timestamp = NOW) -> None:
        self.now = now

    def __call__(self) -> pd.Timestamp:
        return self.now


class Sleeps:
    """Records waits; really sleeps only when asked to."""

    def __init__(self, real: bool = False) -> None:
        self.real = real
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        if self.real:
            time.sleep(seconds)


def om_payload(
    first: pd.Timestamp,
    last: pd.Timestamp,
    variables: Sequence[str] = VARIABLES,
    value: Callable[[str, int], float | None] = lambda name, i: float(i),
) -> dict[str, Any]:
    """An Open-Meteo response for hourly ``first..last`` (inclusive)."""
    times = pd.date_range(first, last, freq="h")
    hourly: dict[str, list[Any]] = {"time": [t.strftime("%Y-%m-%dT%H:%M") for t in times]}
    for name in variables:
        hourly[name] = [value(name, i) for i in range(len(times))]
    return {
        "latitude": 36.1,
        "longitude": -79.95,
        "generationtime_ms": 0.123,
        "utc_offset_seconds": 0,
        "timezone": "GMT",
        "timezone_abbreviation": "GMT",
        "elevation": 270.0,
        "hourly_units": {"time": "iso8601", **{name: UNITS[name] for name in variables}},
        "hourly": hourly,
    }


def forecast_payload(past_days: int = 7, **kwargs: Any) -> dict[str, Any]:
    """What the forecast endpoint returns at NOW: past days, today, no more (forecast_days=1)."""
    first = TODAY - pd.Timedelta(days=past_days)
    last = TODAY + pd.Timedelta(hours=23)
    return om_payload(first, last, **kwargs)


def build(httpserver: HTTPServer, tmp_path: Any, **overrides: Any) -> OpenMeteoSource:
    options: dict[str, Any] = {
        "latitude": 36.1,
        "longitude": -79.95,
        "variables": VARIABLES,
        "past_days": 7,
        "forecast_url": httpserver.url_for(FORECAST),
        "archive_url": httpserver.url_for(ARCHIVE),
        "timeout_s": 2.0,
        "max_retries": 3,
        "cache_dir": tmp_path / "cache",
        "backoff_base_s": 0.01,
        "now": Clock(),
        "sleep": Sleeps(),
    }
    options.update(overrides)
    return OpenMeteoSource(**options)


def requests_to(httpserver: HTTPServer, path: str) -> list[Request]:
    return [request for request, _ in httpserver.log if request.path == path]


# happy path -------------------------------------------------------------------------------
def test_happy_path_columns_utc_range_and_future_hours(
    httpserver: HTTPServer, tmp_path: Any
) -> None:
    payload = forecast_payload(
        value=lambda name, i: None if (name == "wind_speed_10m" and i == 170) else float(i)
    )
    httpserver.expect_request(FORECAST).respond_with_json(payload)
    source = build(httpserver, tmp_path)

    result = source.fetch(pd.Timestamp("2024-06-14T00:00", tz="UTC"), NOW + pd.Timedelta(days=1))

    frame = result.frame
    assert result.source == "open_meteo"
    assert not result.from_cache
    assert result.notes == ()
    assert list(frame.columns) == ["time", *VARIABLES]
    assert str(frame["time"].dtype) == "datetime64[ns, UTC]"
    # range start, and no hour after NOW (12:30): the forecast's future hours are gone
    assert frame["time"].iloc[0] == pd.Timestamp("2024-06-14T00:00", tz="UTC")
    assert frame["time"].iloc[-1] == pd.Timestamp("2024-06-15T12:00", tz="UTC")
    assert len(frame) == 37
    assert frame["time"].is_monotonic_increasing
    # values exactly as delivered; the null stays NaN (no cleaning)
    offset = 6 * 24  # 2024-06-14T00:00 is index 144 of the payload (which starts 06-08)
    assert frame["temperature_2m"].tolist() == [float(offset + i) for i in range(37)]
    assert np.isnan(frame["wind_speed_10m"].iloc[170 - offset])
    assert frame["wind_speed_10m"].isna().sum() == 1

    (request,) = requests_to(httpserver, FORECAST)
    args = request.args
    assert args["latitude"] == "36.1"
    assert args["longitude"] == "-79.95"
    assert args["hourly"] == ",".join(VARIABLES)
    assert args["timezone"] == "UTC"
    assert args["wind_speed_unit"] == "kmh"
    assert args["past_days"] == "7"
    assert args["forecast_days"] == "1"
    assert requests_to(httpserver, ARCHIVE) == []


def test_range_filter_inside_the_response_and_naive_input(
    httpserver: HTTPServer, tmp_path: Any
) -> None:
    httpserver.expect_request(FORECAST).respond_with_json(forecast_payload())
    source = build(httpserver, tmp_path)

    result = source.fetch(pd.Timestamp("2024-06-10T05:00"), pd.Timestamp("2024-06-10T08:00"))

    expected = pd.date_range("2024-06-10T05:00", "2024-06-10T08:00", freq="h", tz="UTC")
    assert list(result.frame["time"]) == list(expected)


def test_start_in_the_future_returns_no_rows_without_a_request(
    httpserver: HTTPServer, tmp_path: Any
) -> None:
    source = build(httpserver, tmp_path)
    result = source.fetch(NOW + pd.Timedelta(hours=2), NOW + pd.Timedelta(hours=5))
    assert result.frame.empty
    assert list(result.frame.columns) == ["time", *VARIABLES]
    assert httpserver.log == []


def test_start_after_end_is_rejected(httpserver: HTTPServer, tmp_path: Any) -> None:
    source = build(httpserver, tmp_path)
    with pytest.raises(ValueError, match="after end"):
        source.fetch(NOW, NOW - pd.Timedelta(hours=1))


def test_past_days_enlarged_for_an_earlier_start(httpserver: HTTPServer, tmp_path: Any) -> None:
    httpserver.expect_request(FORECAST).respond_with_json(forecast_payload(past_days=30))
    source = build(httpserver, tmp_path)

    result = source.fetch(NOW - pd.Timedelta(days=30), NOW)

    (request,) = requests_to(httpserver, FORECAST)
    assert request.args["past_days"] == "30"
    assert requests_to(httpserver, ARCHIVE) == []
    assert result.frame["time"].iloc[0] == pd.Timestamp("2024-05-16T13:00", tz="UTC")
    assert result.frame["time"].iloc[-1] == pd.Timestamp("2024-06-15T12:00", tz="UTC")


# archive + forecast -------------------------------------------------------------------------
def test_old_start_combines_archive_and_forecast(httpserver: HTTPServer, tmp_path: Any) -> None:
    archive_last_day = TODAY - pd.Timedelta(days=5)  # the archive lags five days
    archive = om_payload(
        pd.Timestamp("2024-01-01T00:00", tz="UTC"),
        archive_last_day + pd.Timedelta(hours=23),
        value=lambda name, i: 1.0,
    )
    httpserver.expect_request(ARCHIVE).respond_with_json(archive)
    httpserver.expect_request(FORECAST).respond_with_json(
        forecast_payload(value=lambda name, i: 2.0)
    )
    source = build(httpserver, tmp_path)

    result = source.fetch(pd.Timestamp("2024-01-01T00:00", tz="UTC"), NOW)

    (archive_request,) = requests_to(httpserver, ARCHIVE)
    assert archive_request.args["start_date"] == "2024-01-01"
    assert archive_request.args["end_date"] == archive_last_day.strftime("%Y-%m-%d")
    assert archive_request.args["hourly"] == ",".join(VARIABLES)
    assert archive_request.args["timezone"] == "UTC"
    assert archive_request.args["wind_speed_unit"] == "kmh"
    assert "past_days" not in archive_request.args
    (forecast_request,) = requests_to(httpserver, FORECAST)
    assert int(forecast_request.args["past_days"]) >= 5

    frame = result.frame
    expected = pd.date_range("2024-01-01T00:00", "2024-06-15T12:00", freq="h", tz="UTC")
    assert list(frame["time"]) == list(expected)  # contiguous, no duplicates
    forecast_first = TODAY - pd.Timedelta(days=7)
    old = frame["time"] < forecast_first
    assert (frame.loc[old, "temperature_2m"] == 1.0).all()
    assert (frame.loc[~old, "temperature_2m"] == 2.0).all()  # forecast wins the overlap
    assert not result.from_cache


def test_old_range_uses_only_the_archive(httpserver: HTTPServer, tmp_path: Any) -> None:
    httpserver.expect_request(ARCHIVE).respond_with_json(
        om_payload(
            pd.Timestamp("2024-01-01T00:00", tz="UTC"), pd.Timestamp("2024-01-02T23:00", tz="UTC")
        )
    )
    source = build(httpserver, tmp_path)

    result = source.fetch(
        pd.Timestamp("2024-01-01T06:00", tz="UTC"), pd.Timestamp("2024-01-02T06:00", tz="UTC")
    )

    (request,) = requests_to(httpserver, ARCHIVE)
    assert (request.args["start_date"], request.args["end_date"]) == ("2024-01-01", "2024-01-02")
    assert requests_to(httpserver, FORECAST) == []
    assert len(result.frame) == 25


# retries --------------------------------------------------------------------------------------
def test_429_with_retry_after_is_honoured(httpserver: HTTPServer, tmp_path: Any) -> None:
    httpserver.expect_ordered_request(FORECAST).respond_with_json(
        {"error": True, "reason": "Too many concurrent requests"},
        status=429,
        headers={"Retry-After": "1"},
    )
    httpserver.expect_ordered_request(FORECAST).respond_with_json(forecast_payload())
    sleeps = Sleeps(real=True)
    source = build(httpserver, tmp_path, sleep=sleeps)

    began = time.monotonic()
    result = source.fetch(NOW - pd.Timedelta(hours=3), NOW)
    elapsed = time.monotonic() - began

    assert len(requests_to(httpserver, FORECAST)) == 2
    assert len(sleeps.waits) == 1
    assert sleeps.waits[0] >= 1.0
    assert elapsed >= 1.0
    assert len(result.frame) == 3  # 10:00, 11:00, 12:00
    httpserver.check_assertions()


def test_retry_after_is_capped(httpserver: HTTPServer, tmp_path: Any) -> None:
    httpserver.expect_ordered_request(FORECAST).respond_with_data(
        "busy", status=503, headers={"Retry-After": "3600"}
    )
    httpserver.expect_ordered_request(FORECAST).respond_with_json(forecast_payload())
    sleeps = Sleeps()
    source = build(httpserver, tmp_path, sleep=sleeps, retry_after_cap_s=0.5)

    source.fetch(NOW - pd.Timedelta(hours=3), NOW)

    assert len(sleeps.waits) == 1
    assert 0.5 <= sleeps.waits[0] < 1.0


def test_5xx_then_success(httpserver: HTTPServer, tmp_path: Any) -> None:
    for _ in range(2):
        httpserver.expect_ordered_request(FORECAST).respond_with_json(
            {"error": True, "reason": "internal"}, status=500
        )
    httpserver.expect_ordered_request(FORECAST).respond_with_json(forecast_payload())
    sleeps = Sleeps()
    source = build(httpserver, tmp_path, sleep=sleeps, max_retries=5)

    result = source.fetch(NOW - pd.Timedelta(hours=3), NOW)

    assert len(requests_to(httpserver, FORECAST)) == 3
    assert len(sleeps.waits) == 2
    assert sleeps.waits[1] > sleeps.waits[0] > 0  # exponential backoff
    assert len(result.frame) == 3  # 10:00, 11:00, 12:00
    assert not result.from_cache
    httpserver.check_assertions()


def test_timeout_then_success(httpserver: HTTPServer, tmp_path: Any) -> None:
    release = threading.Event()
    stalled: list[Request] = []

    def stall(request: Request) -> Response:
        stalled.append(request)
        release.wait(5)  # far longer than the client's timeout
        return Response("{}", status=200, content_type="application/json")

    httpserver.expect_ordered_request(FORECAST).respond_with_handler(stall)
    httpserver.expect_ordered_request(FORECAST).respond_with_json(forecast_payload())
    sleeps = Sleeps()
    source = build(httpserver, tmp_path, sleep=sleeps, timeout_s=0.3)

    began = time.monotonic()
    try:
        result = source.fetch(NOW - pd.Timedelta(hours=3), NOW)
    finally:
        release.set()
    elapsed = time.monotonic() - began
    deadline = time.monotonic() + 3  # let the stalled handler finish before the next test
    while len(httpserver.log) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)

    assert len(stalled) == 1
    assert len(sleeps.waits) == 1
    assert 0.3 <= elapsed < 4
    assert len(result.frame) == 3  # 10:00, 11:00, 12:00


# fallback to the cache ------------------------------------------------------------------------
def test_5xx_forever_falls_back_to_the_cached_response(
    httpserver: HTTPServer, tmp_path: Any
) -> None:
    clock = Clock(NOW)
    source = build(httpserver, tmp_path, now=clock)
    httpserver.expect_oneshot_request(FORECAST).respond_with_json(forecast_payload())
    fresh = source.fetch(NOW - pd.Timedelta(hours=6), NOW + pd.Timedelta(hours=6))

    clock.now = NOW + pd.Timedelta(hours=2)  # a later hour: the cached entry is not current
    httpserver.expect_request(FORECAST).respond_with_json(
        {"error": True, "reason": "upstream down"}, status=500
    )
    served = source.fetch(NOW - pd.Timedelta(hours=6), NOW + pd.Timedelta(hours=6))

    assert len(requests_to(httpserver, FORECAST)) == 1 + 3  # one fetch, then three attempts
    assert served.from_cache
    (note,) = served.notes
    assert note.startswith("open_meteo unreachable: ")
    assert "HTTP 500" in note
    assert "served cached response from 2024-06-15T12:30:00+00:00" in note
    # the cached response's later hours were forecasts when fetched: still not served
    pd.testing.assert_frame_equal(served.frame, fresh.frame)


def test_5xx_forever_without_cache_raises(httpserver: HTTPServer, tmp_path: Any) -> None:
    httpserver.expect_request(FORECAST).respond_with_json(
        {"error": True, "reason": "upstream down"}, status=502
    )
    source = build(httpserver, tmp_path)

    with pytest.raises(OpenMeteoUnavailableError) as info:
        source.fetch(NOW - pd.Timedelta(hours=3), NOW)

    message = str(info.value)
    assert isinstance(info.value, SourceError)
    assert httpserver.url_for(FORECAST) in message
    assert "HTTP 502" in message
    assert "upstream down" in message
    assert "no cached response" in message
    assert len(requests_to(httpserver, FORECAST)) == 3


def test_connection_refused_without_cache_raises(tmp_path: Any) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1/forecast"
    source = OpenMeteoSource(
        latitude=36.1,
        longitude=-79.95,
        variables=VARIABLES,
        forecast_url=url,
        cache_dir=tmp_path / "cache",
        max_retries=2,
        backoff_base_s=0.01,
        timeout_s=1.0,
        now=Clock(),
        sleep=Sleeps(),
    )
    with pytest.raises(SourceError, match=r"ConnectError") as info:
        source.fetch(NOW - pd.Timedelta(hours=3), NOW)
    assert url in str(info.value)


# malformed responses --------------------------------------------------------------------------
def test_truncated_json_is_named(httpserver: HTTPServer, tmp_path: Any) -> None:
    body = json.dumps(forecast_payload())
    httpserver.expect_request(FORECAST).respond_with_data(
        body[: len(body) // 2], content_type="application/json"
    )
    source = build(httpserver, tmp_path)

    with pytest.raises(OpenMeteoResponseError, match="truncated JSON"):
        source.fetch(NOW - pd.Timedelta(hours=3), NOW)
    assert not list((tmp_path / "cache").glob("*.json"))  # bad responses are never cached


def test_malformed_json_is_named(httpserver: HTTPServer, tmp_path: Any) -> None:
    httpserver.expect_request(FORECAST).respond_with_data(
        "<html>gateway says hi</html>", content_type="text/html"
    )
    source = build(httpserver, tmp_path)
    with pytest.raises(OpenMeteoResponseError, match="malformed JSON"):
        source.fetch(NOW - pd.Timedelta(hours=3), NOW)


@pytest.mark.parametrize(
    ("mutate", "pattern"),
    [
        (lambda p: p.pop("hourly"), r"no 'hourly' block"),
        (lambda p: p["hourly"].pop("time"), r"no 'hourly\.time' array"),
        (lambda p: p["hourly"].pop("wind_speed_10m"), r"lacks requested variable.*wind_speed_10m"),
        (
            lambda p: p["hourly"]["relative_humidity_2m"].pop(),
            r"'hourly\.relative_humidity_2m' has 191 values but 'hourly\.time' has 192",
        ),
        (lambda p: p["hourly"]["time"].__setitem__(3, "yesterday"), r"unparseable 'hourly\.time'"),
    ],
    ids=["no-hourly", "no-time", "missing-variable", "length-mismatch", "bad-time"],
)
def test_bad_shapes_are_named(
    httpserver: HTTPServer,
    tmp_path: Any,
    mutate: Callable[[dict[str, Any]], object],
    pattern: str,
) -> None:
    payload = forecast_payload()
    mutate(payload)
    httpserver.expect_request(FORECAST).respond_with_json(payload)
    source = build(httpserver, tmp_path)

    with pytest.raises(OpenMeteoResponseError, match=pattern):
        source.fetch(NOW - pd.Timedelta(hours=3), NOW)
    assert len(requests_to(httpserver, FORECAST)) == 1  # not retried


def test_400_reports_open_meteos_reason(httpserver: HTTPServer, tmp_path: Any) -> None:
    reason = "Cannot initialize WeatherVariable from invalid String value tempeture_2m"
    httpserver.expect_request(FORECAST).respond_with_json(
        {"error": True, "reason": reason}, status=400
    )
    source = build(httpserver, tmp_path)

    with pytest.raises(OpenMeteoRequestError, match="HTTP 400") as info:
        source.fetch(NOW - pd.Timedelta(hours=3), NOW)

    assert reason in str(info.value)
    assert len(requests_to(httpserver, FORECAST)) == 1  # a 4xx is not retried


# the hourly cache -----------------------------------------------------------------------------
def test_second_fetch_in_the_same_hour_is_served_from_disk(
    httpserver: HTTPServer, tmp_path: Any
) -> None:
    httpserver.expect_request(FORECAST).respond_with_json(forecast_payload())
    clock = Clock(NOW)
    source = build(httpserver, tmp_path, now=clock)

    first = source.fetch(NOW - pd.Timedelta(hours=5), NOW)
    clock.now = NOW + pd.Timedelta(minutes=20)  # still 12:xx
    second = build(httpserver, tmp_path, now=clock).fetch(NOW - pd.Timedelta(hours=5), NOW)

    assert len(httpserver.log) == 1
    pd.testing.assert_frame_equal(first.frame, second.frame)
    assert not second.from_cache
    cache_files = list((tmp_path / "cache").iterdir())
    assert len(cache_files) == 1
    assert cache_files[0].name.endswith("-20240615T12.json")  # no temporary files left

    clock.now = NOW + pd.Timedelta(hours=1)  # a new hour: fetched again
    source.fetch(NOW - pd.Timedelta(hours=5), NOW)
    assert len(httpserver.log) == 2


# wiring ---------------------------------------------------------------------------------------
def test_from_settings_and_make_source(httpserver: HTTPServer, tmp_path: Any) -> None:
    settings = Settings(
        _env_file=None,
        state_dir=tmp_path / "state",
        open_meteo_forecast_url=httpserver.url_for(FORECAST),
        open_meteo_archive_url=httpserver.url_for(ARCHIVE),
        http_timeout_s=3.0,
        http_max_retries=2,
    )
    params = Params.model_validate(
        {
            "location": {"name": "Greensboro, NC", "latitude": 36.1, "longitude": -79.95},
            "data": {"target": "temperature_2m", "variables": list(VARIABLES), "past_days": 3},
            "quality": {"ranges": {"temperature_2m": [-90.0, 60.0]}},
        }
    )
    source = make_source(settings, params, "open_meteo")
    assert isinstance(source, OpenMeteoSource)
    assert source.name == "open_meteo"
    assert source.past_days == 3
    assert source.timeout_s == 3.0
    assert source.max_attempts == 2

    now = pd.Timestamp.now(tz="UTC")  # the real clock this time
    today = now.floor("D")
    httpserver.expect_request(FORECAST).respond_with_json(
        om_payload(today - pd.Timedelta(days=3), today + pd.Timedelta(hours=23))
    )
    result = source.fetch(now - pd.Timedelta(hours=2), now)
    assert 2 <= len(result.frame) <= 3
    assert result.frame["time"].max() <= now
    assert list((settings.cache_dir / "open_meteo").glob("*.json"))


def test_parse_retry_after() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 0 ") == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    reference = pd.Timestamp("2024-06-15T12:00:00", tz="UTC").to_pydatetime()
    assert parse_retry_after("Sat, 15 Jun 2024 12:00:30 GMT", now=reference) == 30.0
    assert parse_retry_after("Sat, 15 Jun 2024 11:00:00 GMT", now=reference) == 0.0
