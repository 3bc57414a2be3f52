"""The one feature implementation shared by training and serving."""

from rps.features.build import (
    FeatureError,
    FeatureSpec,
    build_feature_row,
    build_features,
)

__all__ = ["FeatureError", "FeatureSpec", "build_feature_row", "build_features"]
