"""The data contract: the observation columns, their units and physical meaning.

Every source delivers hourly rows with a ``time`` column (UTC) and these Open-Meteo
variable names, in Open-Meteo's default units.
"""

from __future__ import annotations

from dataclasses import dataclass

TIME = "time"


@dataclass(frozen=True)
class Variable:
    name: str
    unit: str
    description: str


VARIABLES: dict[str, Variable] = {
    v.name: v
    for v in (
        Variable("temperature_2m", "degC", "air temperature 2 m above ground"),
        Variable("relative_humidity_2m", "%", "relative humidity 2 m above ground"),
        Variable("dew_point_2m", "degC", "dew point 2 m above ground"),
        Variable("surface_pressure", "hPa", "atmospheric pressure at the station"),
        Variable("wind_speed_10m", "km/h", "wind speed 10 m above ground"),
        Variable("wind_direction_10m", "deg", "direction the wind comes from, 0-360"),
        Variable("cloud_cover", "%", "total cloud cover"),
    )
}
