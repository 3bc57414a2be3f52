"""The typed errors of training and the registry; each message names the problem."""

from __future__ import annotations


class TrainingError(RuntimeError):
    """Training cannot proceed; the message names the problem."""


class DatasetError(TrainingError):
    """The dataset version is missing, unknown or unreadable."""


class InsufficientDataError(TrainingError):
    """The dataset is too short for the feature window, the horizon and the splits."""


class LeakageError(TrainingError):
    """A feature uses information from after its issue time (or is not in the spec)."""


class RegistryError(RuntimeError):
    """A registry operation failed; the message names the model, version or server."""


class ModelNotFoundError(RegistryError):
    """The registered model, version or alias does not exist."""


class TrackingUnavailableError(RegistryError):
    """The MLflow tracking/registry server cannot be reached."""
