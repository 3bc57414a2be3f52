"""Temperature, dew point and relative humidity are tied by the Magnus formula.

Either temperature follows from the other two. The drift checks use the dew point the
temperature and humidity imply (a sensor that disagrees with the others); the features use the
temperature the dew point and humidity imply, so a model that finds its temperature sensor
drifted (a late clock, a bias) can lean on the two sensors that still agree.
"""

from __future__ import annotations

import numpy as np

#: Magnus coefficients over water (Alduchov and Eskridge 1996), temperatures in degC
_A = 17.625
_B = 243.04


def _magnus(temperature: np.ndarray) -> np.ndarray:
    result: np.ndarray = _A * temperature / (_B + temperature)
    return result


def _inverse(gamma: np.ndarray) -> np.ndarray:
    result: np.ndarray = _B * gamma / (_A - gamma)
    return result


def _log_humidity(humidity: np.ndarray) -> np.ndarray:
    result: np.ndarray = np.log(np.clip(humidity, 0.1, 100.0) / 100.0)
    return result


def implied_dew_point(temperature: np.ndarray, humidity: np.ndarray) -> np.ndarray:
    """Dew point (degC) from temperature (degC) and relative humidity (%)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return _inverse(_log_humidity(humidity) + _magnus(temperature))


def implied_temperature(dew_point: np.ndarray, humidity: np.ndarray) -> np.ndarray:
    """Temperature (degC) from dew point (degC) and relative humidity (%)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return _inverse(_magnus(dew_point) - _log_humidity(humidity))
