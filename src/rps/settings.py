"""Runtime settings: URIs, paths and secrets, read from the environment (prefix ``RPS_``).

Nothing here touches the filesystem at import time; call :func:`get_settings` and then
:meth:`Settings.ensure_dirs` where a command needs the local state folder.
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import quote

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_SECRETS = {"changeme", "change-me", "secret", "password", "minioadmin", ""}


class Settings(BaseSettings):
    """Everything that differs between a laptop and the production stack."""

    model_config = SettingsConfigDict(
        env_prefix="RPS_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    env: Literal["development", "test", "production"] = "development"
    project_root: Path = Field(default_factory=Path.cwd)
    state_dir: Path = Path(".rps")
    params_path: Path = Path("params.yaml")
    log_level: str = "INFO"
    # model fits run side by side in training (rps.models.parallel); unset: the usable CPUs
    fit_workers: int | None = Field(default=None, ge=1)

    # data source
    source: Literal["open_meteo", "replay", "synthetic"] = "replay"
    replay_file: Path | None = None  # a TMY3 CSV; default: pvlib's Greensboro NC station
    replay_speed: float = 1.0  # recorded hours per wall-clock hour
    # a replay clock shared by every process (API, receiver, DAG runs): at wall time
    # replay_anchor the replay reads replay_origin, and runs replay_speed times faster from
    # there; unset, each process anchors at its own start and replay time starts at wall time
    replay_anchor: datetime | None = None
    replay_origin: datetime | None = None
    open_meteo_forecast_url: str = "https://api.open-meteo.com/v1/forecast"
    open_meteo_archive_url: str = "https://archive-api.open-meteo.com/v1/archive"
    http_timeout_s: float = 10.0
    http_max_retries: int = 5

    # object storage: local folder unless an S3 bucket is configured
    storage_backend: Literal["local", "s3"] = "local"
    s3_bucket: str = "rps-data"
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    aws_access_key_id: SecretStr | None = None
    aws_secret_access_key: SecretStr | None = None

    # DVC: a git+dvc workspace for dataset versions; remote is a local folder or the S3 bucket
    dvc_repo_dir: Path | None = None  # default: <state_dir>/dvc-repo
    dvc_remote_url: str | None = None  # default: <state_dir>/dvc-remote or s3://<bucket>/dvc
    dvc_git_commit: bool = True

    # MLflow
    mlflow_tracking_uri: str | None = None  # default: sqlite under state_dir
    mlflow_registry_uri: str | None = None
    mlflow_experiment: str = "rps-temperature"
    registered_model_name: str = "rps-temperature-forecaster"
    mlflow_tracking_username: str | None = None
    mlflow_tracking_password: SecretStr | None = None

    # serving
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    api_token: SecretStr | None = None
    model_uri: str | None = None  # default: models:/<registered_model_name>@champion
    model_dir: Path | None = None  # a local bundle baked into the image
    max_batch_rows: int = 1000
    max_body_bytes: int = 1_000_000
    # answer a successful POST /predict ahead of FastAPI's routing (rps.serving.fast_predict);
    # off: every request goes through the route (the same answers, more CPU per request)
    fast_predict: bool = True
    # registry mode (no model_dir): seconds between champion version checks (0: only
    # POST /model/reload), and the longest backoff while the registry does not answer
    model_check_seconds: float = 30.0
    model_check_backoff_max_s: float = 300.0

    # orchestration and alerting
    # API base URLs whose POST /model/reload the promote step calls after a new champion
    # (comma separated; bearer token: api_token). Failures are logged only: the API also polls.
    api_reload_urls: str = ""
    airflow_home: Path | None = None  # default: <state_dir>/airflow
    airflow_api_url: str | None = None
    airflow_username: str | None = None
    airflow_password: SecretStr | None = None
    dag_schedule: str = "@daily"
    dag_catchup: bool = False
    slack_webhook_url: str | None = None
    smtp_host: str | None = None
    smtp_port: int = 25
    alert_email_to: str | None = None
    alert_email_from: str = "rps@localhost"
    retrain_cooldown_s: float = 3600.0

    # data registry git remote and the hub (Dagshub): one repository URL, a user and a token
    # derive the MLflow tracking URI, the DVC remote and the registry's git remote (cicd)
    data_git_remote_url: str | None = None  # where the data registry's commits are pushed
    hub_repo_url: str | None = None  # e.g. https://dagshub.com/<owner>/<repo>
    hub_user: str | None = None
    hub_token: SecretStr | None = None
    hub_tracking_uri: str | None = None  # default: <hub_repo_url>.mlflow
    hub_git_url: str | None = None  # default: <hub_repo_url>.git
    hub_s3_endpoint_url: str | None = None  # default: <hub_repo_url>.s3 (DVC's S3 remote)
    hub_dvc_remote_url: str = "s3://dvc"  # the bucket (and prefix) of the hub's DVC remote

    @model_validator(mode="after")
    def _derive_from_hub(self) -> Settings:
        """With ``RPS_HUB_REPO_URL`` set, fill every hub URI and credential not set explicitly."""
        if not self.hub_repo_url:
            return self
        base = self.hub_repo_url.rstrip("/").removesuffix(".git")
        derived: dict[str, object] = {
            "mlflow_tracking_uri": self.hub_tracking_uri or f"{base}.mlflow",
            "mlflow_tracking_username": self.hub_user,
            "mlflow_tracking_password": self.hub_token,
            "storage_backend": "s3",
            "dvc_remote_url": self.hub_dvc_remote_url,
            "s3_endpoint_url": self.hub_s3_endpoint_url or f"{base}.s3",
            "aws_access_key_id": self.hub_token,  # Dagshub takes the token as key id and secret
            "aws_secret_access_key": self.hub_token,
            "data_git_remote_url": self.hub_git_url or f"{base}.git",
        }
        for name, value in derived.items():
            if name not in self.model_fields_set and value is not None:
                object.__setattr__(self, name, value)
        return self

    @property
    def hub_name(self) -> str | None:
        """The hub's repository URL without credentials (for messages), or None."""
        return _without_credentials(self.hub_repo_url) if self.hub_repo_url else None

    @property
    def data_git_remote(self) -> str | None:
        """The data registry's git remote with the hub's user and token (HTTP(S) URLs only)."""
        url = self.data_git_remote_url
        if not url or self.hub_token is None or not url.startswith(("http://", "https://")):
            return url
        scheme, rest = url.split("://", 1)
        if "@" in rest.split("/", 1)[0]:
            return url
        user = quote(self.hub_user or "token", safe="")
        token = quote(self.hub_token.get_secret_value(), safe="")
        return f"{scheme}://{user}:{token}@{rest}"

    @property
    def data_git_remote_display(self) -> str:
        """:attr:`data_git_remote` without credentials."""
        return _without_credentials(self.data_git_remote_url or "")

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> Settings:
        if self.env == "production":
            for name in ("aws_secret_access_key", "api_token", "mlflow_tracking_password"):
                value = getattr(self, name)
                if value is not None and value.get_secret_value().lower() in PLACEHOLDER_SECRETS:
                    raise ValueError(f"RPS_{name.upper()} holds a placeholder value in production")
        return self

    # derived locations -------------------------------------------------------------------
    def _abs(self, path: Path) -> Path:
        return path if path.is_absolute() else self.project_root / path

    @property
    def state_path(self) -> Path:
        return self._abs(self.state_dir)

    @property
    def params_file(self) -> Path:
        return self._abs(self.params_path)

    @property
    def raw_dir(self) -> Path:
        return self.state_path / "data" / "raw"

    @property
    def processed_dir(self) -> Path:
        return self.state_path / "data" / "processed"

    @property
    def cache_dir(self) -> Path:
        return self.state_path / "cache"

    @property
    def dvc_repo_path(self) -> Path:
        return self._abs(self.dvc_repo_dir) if self.dvc_repo_dir else self.state_path / "dvc-repo"

    @property
    def dvc_remote(self) -> str:
        if self.dvc_remote_url:
            return self.dvc_remote_url
        if self.storage_backend == "s3":
            return f"s3://{self.s3_bucket}/dvc"
        return str(self.state_path / "dvc-remote")

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.state_path / 'mlflow.db'}"

    @property
    def artifact_root(self) -> str:
        return (self.state_path / "mlartifacts").as_uri()

    @property
    def champion_uri(self) -> str:
        return self.model_uri or f"models:/{self.registered_model_name}@champion"

    @property
    def airflow_home_path(self) -> Path:
        return self._abs(self.airflow_home) if self.airflow_home else self.state_path / "airflow"

    @property
    def alert_log(self) -> Path:
        return self.state_path / "alerts.jsonl"

    def ensure_dirs(self) -> None:
        """Create the local state folders (only called by commands that write)."""
        for path in (self.raw_dir, self.processed_dir, self.cache_dir):
            path.mkdir(parents=True, exist_ok=True)


def _without_credentials(url: str) -> str:
    """``url`` with any ``user:password@`` part removed."""
    if "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    host, sep, path = rest.partition("/")
    return f"{scheme}://{host.rsplit('@', 1)[-1]}{sep}{path}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached; tests clear with ``get_settings.cache_clear()``)."""
    return Settings()
