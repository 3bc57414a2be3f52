"""The one feature implementation shared by training and serving.

``rps.features.spec`` (the spec) and ``rps.features.online`` (one row, NumPy) import no
pandas; ``rps.features.build`` (every row, pandas) does. The names below resolve lazily so
that importing the package itself stays light.
"""

from __future__ import annotations

from typing import Any

__all__ = ["FeatureError", "FeatureSpec", "build_feature_row", "build_features"]


def __getattr__(name: str) -> Any:
    if name in ("FeatureError", "FeatureSpec"):
        from rps.features import spec

        return getattr(spec, name)
    if name == "build_feature_row":
        from rps.features.online import build_feature_row

        return build_feature_row
    if name == "build_features":
        from rps.features.build import build_features

        return build_features
    raise AttributeError(f"module 'rps.features' has no attribute {name!r}")
