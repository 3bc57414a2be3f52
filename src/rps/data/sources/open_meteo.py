"""Hourly observations from the Open-Meteo HTTP API (forecast and archive endpoints).

Recent hours come from the forecast endpoint (``past_days`` back from today, plus
``forecast_days=1`` whose future hours are dropped); ranges older than the forecast
endpoint's 92-day reach are backfilled from the archive endpoint, which lags real time by a
few days. When a range needs both, both are fetched and combined, the forecast endpoint
winning where they overlap.

Every HTTP call retries with exponential backoff and jitter on 429, 5xx, timeouts and
connection errors (honouring ``Retry-After``). Valid responses are cached on disk, keyed by
URL, sorted query and the current UTC hour, so a rerun inside the same hour does not refetch.
When the API stays unreachable, the newest cached response for the same query is served
instead and the result is flagged ``from_cache``.
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pandas as pd
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

from rps.data.schema import TIME
from rps.data.sources.base import FetchResult, SourceError
from rps.data.sources.response_cache import ResponseCache

if TYPE_CHECKING:
    from rps.params import Params
    from rps.settings import Settings

logger = logging.getLogger(__name__)

MAX_PAST_DAYS = 92
"""The forecast endpoint's largest ``past_days``."""

_RETRY_AFTER_STATUSES = frozenset({429, 503})
_JSON_LITERALS = ("true", "false", "null")


class OpenMeteoError(SourceError):
    """Open-Meteo could not deliver usable data."""


class OpenMeteoResponseError(OpenMeteoError):
    """A response arrived but is not the JSON shape Open-Meteo promises."""


class OpenMeteoRequestError(OpenMeteoError):
    """Open-Meteo rejected the request (a 4xx status or an ``{"error": true}`` body)."""


class OpenMeteoUnavailableError(OpenMeteoError):
    """Open-Meteo stayed unreachable after all retries and no cached response exists."""


class _RetryableStatusError(Exception):
    """A transient HTTP status (429 or 5xx); carries the server's ``Retry-After``, if any."""

    def __init__(self, status: int, url: str, reason: str | None, retry_after: float | None):
        detail = f"HTTP {status} from {url}"
        if reason:
            detail += f": {reason}"
        super().__init__(detail)
        self.status = status
        self.retry_after = retry_after


class _UnreachableError(Exception):
    """All attempts failed with transient errors."""

    def __init__(self, url: str, attempts: int, last_error: BaseException):
        self.url = url
        self.attempts = attempts
        self.last_error = _describe(last_error)
        super().__init__(f"{url} failed after {attempts} attempt(s), last error: {self.last_error}")


def _describe(exc: BaseException) -> str:
    """A one-line description of a transport or status error."""
    text = str(exc)
    if isinstance(exc, _RetryableStatusError):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _utc(ts: pd.Timestamp | datetime | str) -> pd.Timestamp:
    """``ts`` as a tz-aware UTC timestamp (naive input is taken to be UTC)."""
    stamp = pd.Timestamp(ts)
    if stamp.tzinfo is None:
        return stamp.tz_localize("UTC")
    return stamp.tz_convert("UTC")


def _default_now() -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC")


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait according to a ``Retry-After`` header.

    Args:
        value: the header value: delay-seconds or an HTTP date.
        now: the reference time for an HTTP date (default: the current time).

    Returns:
        A non-negative number of seconds, or None when the header is absent or unparseable.
    """
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if math.isnan(seconds):
        return None
    return max(0.0, seconds)


def _error_reason(response: httpx.Response) -> str | None:
    """Open-Meteo's ``reason`` from an error body, else a short excerpt of the body."""
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        return text[:200] or None
    if isinstance(body, dict) and body.get("reason") is not None:
        return str(body["reason"])
    return json.dumps(body)[:200]


def _looks_truncated(text: str, exc: json.JSONDecodeError) -> bool:
    """Whether a JSON decode error means the document stopped early (vs. is garbage)."""
    stripped = text.rstrip()
    if exc.pos >= len(stripped) or exc.msg.startswith("Unterminated string"):
        return True
    tail = stripped[exc.pos :]
    return any(literal.startswith(tail) for literal in _JSON_LITERALS)


def decode_json(text: str, url: str) -> Any:
    """Parse a response body.

    Args:
        text: the body.
        url: the URL it came from (for the message).

    Raises:
        OpenMeteoResponseError: the body is empty, truncated or malformed JSON.
    """
    if not text.strip():
        raise OpenMeteoResponseError(f"open_meteo returned an empty response body from {url}")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        kind = "truncated" if _looks_truncated(text, exc) else "malformed"
        raise OpenMeteoResponseError(
            f"open_meteo returned {kind} JSON from {url} "
            f"({exc.msg} at char {exc.pos} of {len(text)})"
        ) from exc


def payload_to_frame(payload: Any, variables: Sequence[str], url: str) -> pd.DataFrame:
    """Turn an Open-Meteo JSON payload into one row per hour, exactly as delivered.

    Args:
        payload: the decoded JSON document.
        variables: the hourly variables that must be present.
        url: the URL it came from (for messages).

    Returns:
        ``time`` (tz-aware UTC) and one float column per variable; nulls become NaN.

    Raises:
        OpenMeteoRequestError: the payload is an Open-Meteo error object.
        OpenMeteoResponseError: ``hourly`` or ``hourly.time`` is missing, a variable is
            missing, an array's length differs from ``time``'s, or values are not numbers.
    """
    if not isinstance(payload, dict):
        raise OpenMeteoResponseError(
            f"open_meteo response from {url} is a JSON {type(payload).__name__}, not an object"
        )
    if payload.get("error"):
        raise OpenMeteoRequestError(
            f"open_meteo reported an error for {url}: {payload.get('reason', 'no reason given')}"
        )
    hourly = payload.get("hourly")
    if hourly is None:
        raise OpenMeteoResponseError(f"open_meteo response from {url} has no 'hourly' block")
    if not isinstance(hourly, dict):
        raise OpenMeteoResponseError(f"open_meteo response from {url}: 'hourly' is not an object")
    times = hourly.get("time")
    if times is None:
        raise OpenMeteoResponseError(f"open_meteo response from {url} has no 'hourly.time' array")
    if not isinstance(times, list):
        raise OpenMeteoResponseError(f"open_meteo response from {url}: 'hourly.time' is not a list")
    missing = [name for name in variables if name not in hourly]
    if missing:
        raise OpenMeteoResponseError(
            f"open_meteo response from {url} lacks requested variable(s): {', '.join(missing)}"
        )
    n = len(times)
    columns: dict[str, pd.Series[Any]] = {}
    for name in variables:
        values = hourly[name]
        if not isinstance(values, list):
            raise OpenMeteoResponseError(
                f"open_meteo response from {url}: 'hourly.{name}' is not a list"
            )
        if len(values) != n:
            raise OpenMeteoResponseError(
                f"open_meteo response from {url}: 'hourly.{name}' has {len(values)} values "
                f"but 'hourly.time' has {n}"
            )
        try:
            columns[name] = pd.Series(values, dtype="float64")
        except (TypeError, ValueError) as exc:
            raise OpenMeteoResponseError(
                f"open_meteo response from {url}: 'hourly.{name}' holds non-numeric values"
            ) from exc
    offset = payload.get("utc_offset_seconds", 0) or 0
    if not isinstance(offset, int | float):
        raise OpenMeteoResponseError(
            f"open_meteo response from {url}: 'utc_offset_seconds' is not a number"
        )
    try:
        stamps = pd.to_datetime(pd.Series(times, dtype="object"), format="ISO8601", utc=True)
    except (TypeError, ValueError) as exc:
        raise OpenMeteoResponseError(
            f"open_meteo response from {url}: unparseable 'hourly.time' entries ({exc})"
        ) from exc
    if stamps.isna().any():
        raise OpenMeteoResponseError(f"open_meteo response from {url}: null 'hourly.time' entries")
    if offset:
        # Local wall-clock times (only if a timezone other than UTC was requested).
        stamps = stamps - pd.Timedelta(seconds=float(offset))
    frame = pd.DataFrame({TIME: stamps.astype("datetime64[ns, UTC]"), **columns})
    return frame.reset_index(drop=True)


class OpenMeteoSource:
    """Hourly observations for one location from Open-Meteo.

    Attributes:
        name: ``"open_meteo"``.
    """

    name = "open_meteo"

    def __init__(
        self,
        *,
        latitude: float,
        longitude: float,
        variables: Sequence[str],
        past_days: int = 7,
        forecast_url: str = "https://api.open-meteo.com/v1/forecast",
        archive_url: str = "https://archive-api.open-meteo.com/v1/archive",
        timeout_s: float = 10.0,
        max_retries: int = 5,
        cache_dir: Path | None = None,
        backoff_base_s: float = 1.0,
        backoff_max_s: float = 30.0,
        retry_after_cap_s: float = 60.0,
        archive_lag_days: int = 5,
        client: httpx.Client | None = None,
        now: Callable[[], pd.Timestamp] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        """Configure the source.

        Args:
            latitude: the location's latitude in degrees.
            longitude: the location's longitude in degrees.
            variables: Open-Meteo hourly variable names to request.
            past_days: days before today the forecast endpoint returns by default; enlarged
                (up to 92) when a fetch starts earlier.
            forecast_url: the forecast endpoint.
            archive_url: the historical (archive) endpoint.
            timeout_s: timeout per HTTP request (connect, read, write and pool).
            max_retries: maximum attempts per request, the first one included.
            cache_dir: where responses are cached; None disables caching and fallback.
            backoff_base_s: first backoff wait; doubles per attempt, plus up to this much
                random jitter.
            backoff_max_s: cap on the exponential part of the backoff.
            retry_after_cap_s: cap on a server's ``Retry-After`` wait.
            archive_lag_days: days the archive endpoint trails today; the forecast endpoint
                covers the days after that.
            client: an httpx client to use (not closed here); default: one per fetch.
            now: the clock (tz-aware UTC); injectable for tests.
            sleep: how to wait between attempts; injectable for tests.
            rng: the jitter's random generator.
        """
        if not variables:
            raise ValueError("open_meteo needs at least one hourly variable")
        if not 0 <= past_days <= MAX_PAST_DAYS:
            raise ValueError(f"past_days must be within 0..{MAX_PAST_DAYS}, got {past_days}")
        self.latitude = float(latitude)
        self.longitude = float(longitude)
        self.variables: tuple[str, ...] = tuple(variables)
        self.past_days = past_days
        self.forecast_url = forecast_url
        self.archive_url = archive_url
        self.timeout_s = timeout_s
        self.max_attempts = max(1, max_retries)
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.retry_after_cap_s = retry_after_cap_s
        self.archive_lag_days = archive_lag_days
        self._cache = ResponseCache(cache_dir) if cache_dir is not None else None
        self._client = client
        self._now = now or _default_now
        self._sleep = sleep
        self._rng = rng or random.Random()

    @classmethod
    def from_settings(cls, settings: Settings, params: Params) -> OpenMeteoSource:
        """A source for ``params.location`` configured from the runtime settings.

        Args:
            settings: endpoints, timeout, retries and the cache folder.
            params: location, variables and ``past_days``.
        """
        return cls(
            latitude=params.location.latitude,
            longitude=params.location.longitude,
            variables=params.data.variables,
            past_days=params.data.past_days,
            forecast_url=settings.open_meteo_forecast_url,
            archive_url=settings.open_meteo_archive_url,
            timeout_s=settings.http_timeout_s,
            max_retries=settings.http_max_retries,
            cache_dir=settings.cache_dir / "open_meteo",
        )

    # public ------------------------------------------------------------------------------
    def fetch(self, start: pd.Timestamp, end: pd.Timestamp) -> FetchResult:
        """Observed hours with ``start <= time <= end`` and ``time <= now``.

        Args:
            start: first hour wanted (naive values are taken as UTC).
            end: last hour wanted, inclusive.

        Returns:
            The rows as delivered; ``from_cache`` is True when a cached response stood in
            for an unreachable API, with a note saying so.

        Raises:
            ValueError: ``start`` is after ``end``.
            OpenMeteoError: a malformed response, a rejected request, or an unreachable API
                with nothing cached.
        """
        start, end = _utc(start), _utc(end)
        if start > end:
            raise ValueError(f"start {start} is after end {end}")
        now = _utc(self._now())
        if start > now:
            return FetchResult(frame=self._empty_frame(), source=self.name)

        frames: list[pd.DataFrame] = []
        notes: list[str] = []
        client = self._client or httpx.Client(
            timeout=httpx.Timeout(self.timeout_s),
            follow_redirects=True,
            headers={"User-Agent": "rps-open-meteo/0.1"},
        )
        try:
            for url, query in self._plan(start, min(end, now), now):
                frame, note = self._fetch_query(client, url, query, now)
                frames.append(frame)
                if note is not None:
                    notes.append(note)
        finally:
            if self._client is None:
                client.close()

        combined = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        if len(frames) > 1:
            # Later frames (the forecast endpoint) win where the endpoints overlap.
            combined = combined.drop_duplicates(subset=TIME, keep="last")
        times = combined[TIME]
        mask = (times >= start) & (times <= end) & (times <= now)
        result = combined.loc[mask].sort_values(TIME, kind="stable").reset_index(drop=True)
        logger.info(
            "open_meteo: %d hourly rows for %s .. %s%s",
            len(result),
            start.isoformat(),
            end.isoformat(),
            " (from cache)" if notes else "",
        )
        return FetchResult(
            frame=result, source=self.name, from_cache=bool(notes), notes=tuple(notes)
        )

    # planning ----------------------------------------------------------------------------
    def _base_query(self) -> dict[str, str]:
        return {
            "latitude": repr(self.latitude),
            "longitude": repr(self.longitude),
            "hourly": ",".join(self.variables),
            "timezone": "UTC",
            "wind_speed_unit": "kmh",
        }

    def _forecast_query(self, past_days: int) -> dict[str, str]:
        return {**self._base_query(), "past_days": str(past_days), "forecast_days": "1"}

    def _plan(
        self, start: pd.Timestamp, end: pd.Timestamp, now: pd.Timestamp
    ) -> list[tuple[str, dict[str, str]]]:
        """The requests covering ``[start, end]``: archive first, then forecast."""
        day = pd.Timedelta(days=1)
        today = now.floor("D")
        if start >= today - MAX_PAST_DAYS * day:
            needed = math.ceil((today - start) / day)
            return [(self.forecast_url, self._forecast_query(max(self.past_days, needed)))]

        archive_last_day = today - self.archive_lag_days * day
        archive_end_day = min(end.floor("D"), archive_last_day)
        archive_query = {
            **self._base_query(),
            "start_date": start.strftime("%Y-%m-%d"),
            "end_date": archive_end_day.strftime("%Y-%m-%d"),
        }
        plan = [(self.archive_url, archive_query)]
        if end >= archive_end_day + day:
            # One day of overlap so a late archive does not leave a gap.
            past_days = min(MAX_PAST_DAYS, max(self.past_days, self.archive_lag_days + 1))
            plan.append((self.forecast_url, self._forecast_query(past_days)))
        return plan

    def _empty_frame(self) -> pd.DataFrame:
        data: dict[str, pd.Series[Any]] = {TIME: pd.Series([], dtype="datetime64[ns, UTC]")}
        for name in self.variables:
            data[name] = pd.Series([], dtype="float64")
        return pd.DataFrame(data)

    # one query: cache, HTTP with retries, fallback ------------------------------------------
    def _fetch_query(
        self, client: httpx.Client, url: str, query: dict[str, str], now: pd.Timestamp
    ) -> tuple[pd.DataFrame, str | None]:
        """One endpoint's rows, and a note if they came from the fallback cache."""
        hour = now.floor("h")
        key = ResponseCache.query_key(url, query)
        if self._cache is not None:
            hit = self._cache.read(self._cache.path(key, hour))
            if hit is not None:
                try:
                    frame = payload_to_frame(hit[0], self.variables, url)
                except OpenMeteoError as exc:
                    logger.warning("open_meteo: ignoring invalid cached response (%s)", exc)
                else:
                    logger.debug("open_meteo: cache hit for %s (hour %s)", url, hour)
                    return frame, None

        try:
            text = self._get_with_retries(client, url, query)
        except _UnreachableError as exc:
            return self._fallback(key, url, exc)
        payload = decode_json(text, url)
        frame = payload_to_frame(payload, self.variables, url)
        if self._cache is not None:
            self._cache.write(
                key, hour, url=url, query=query, payload=payload, fetched_at=_utc(self._now())
            )
        return frame, None

    def _fallback(
        self, key: str, url: str, exc: _UnreachableError
    ) -> tuple[pd.DataFrame, str | None]:
        """The newest valid cached response for the query, or OpenMeteoUnavailableError."""
        cache = self._cache
        for path in cache.newest_first(key) if cache is not None else []:
            hit = cache.read(path) if cache is not None else None
            if hit is None:
                continue
            payload, fetched_at = hit
            try:
                frame = payload_to_frame(payload, self.variables, url)
            except OpenMeteoError as bad:
                logger.warning("open_meteo: skipping invalid cached response %s (%s)", path, bad)
                continue
            # Hours after the fetch were forecasts then, not observations: never serve them.
            frame = frame.loc[frame[TIME] <= fetched_at].reset_index(drop=True)
            note = (
                f"open_meteo unreachable: {exc}; "
                f"served cached response from {fetched_at.isoformat()}"
            )
            logger.warning(note)
            return frame, note
        raise OpenMeteoUnavailableError(
            f"open_meteo unreachable: {url} failed after {exc.attempts} attempt(s) "
            f"(last error: {exc.last_error}) and no cached response exists for this query"
        ) from exc

    def _wait_s(self, state: RetryCallState) -> float:
        """Exponential backoff with jitter, at least the server's (capped) ``Retry-After``."""
        exponent = max(0, state.attempt_number - 1)
        backoff = min(self.backoff_max_s, self.backoff_base_s * 2.0**exponent)
        backoff += self._rng.uniform(0.0, self.backoff_base_s)
        error = state.outcome.exception() if state.outcome is not None else None
        if isinstance(error, _RetryableStatusError) and error.retry_after is not None:
            return max(backoff, min(error.retry_after, self.retry_after_cap_s))
        return backoff

    def _get_with_retries(self, client: httpx.Client, url: str, query: dict[str, str]) -> str:
        """The body of a 2xx response, retrying transient failures.

        Raises:
            _UnreachableError: every attempt failed with a transient error.
            OpenMeteoRequestError: a non-retryable 4xx status.
        """

        def log_retry(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome is not None else None
            wait = state.next_action.sleep if state.next_action is not None else 0.0
            logger.warning(
                "open_meteo: attempt %d/%d for %s failed (%s); retrying in %.2f s",
                state.attempt_number,
                self.max_attempts,
                url,
                _describe(error) if error is not None else "unknown error",
                wait,
            )

        retrying = Retrying(
            stop=stop_after_attempt(self.max_attempts),
            wait=self._wait_s,
            retry=retry_if_exception_type((_RetryableStatusError, httpx.TransportError)),
            sleep=self._sleep,
            before_sleep=log_retry,
            reraise=True,
        )
        try:
            return retrying(self._get_once, client, url, query)
        except (_RetryableStatusError, httpx.TransportError) as exc:
            raise _UnreachableError(url, self.max_attempts, exc) from exc

    def _get_once(self, client: httpx.Client, url: str, query: dict[str, str]) -> str:
        response = client.get(url, params=query)
        status = response.status_code
        if 200 <= status < 300:
            return response.text
        reason = _error_reason(response)
        if status == 429 or status >= 500:
            retry_after = None
            if status in _RETRY_AFTER_STATUSES:
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
            raise _RetryableStatusError(status, url, reason, retry_after)
        raise OpenMeteoRequestError(
            f"open_meteo rejected the request to {url} (HTTP {status}): "
            f"{reason or 'no reason given'}"
        )
