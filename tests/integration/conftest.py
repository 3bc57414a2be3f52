"""Integration fixtures: a real S3 API (moto's server) on localhost, shared by the session.

Use ``s3_endpoint`` for anything that talks S3 (boto3, DVC's s3 remote, MLflow artifacts):

    def test_x(s3_endpoint):
        bucket = s3_endpoint.new_bucket("models")   # a fresh, unique bucket name
        client = s3_endpoint.client()
        settings = Settings(storage_backend="s3", s3_bucket=bucket, **s3_endpoint.settings_kwargs())

Buckets are not created by the fixture (the code under test is expected to create them or
the test creates them with ``client().create_bucket``).
"""

from __future__ import annotations

import itertools
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

logger = logging.getLogger(__name__)

TEST_ACCESS_KEY = "rps-test-access-key"
TEST_SECRET_KEY = "rps-test-secret-key"
TEST_REGION = "us-east-1"


@dataclass(frozen=True)
class S3Endpoint:
    """A running S3-compatible server.

    Attributes:
        url: the endpoint URL (``http://127.0.0.1:<port>``).
        access_key: the access key id the environment is set to.
        secret_key: the secret access key the environment is set to.
        region: the region name to use.
    """

    url: str
    access_key: str = TEST_ACCESS_KEY
    secret_key: str = TEST_SECRET_KEY
    region: str = TEST_REGION
    _counter: itertools.count[int] = field(default_factory=itertools.count, repr=False)

    def new_bucket(self, prefix: str = "rps") -> str:
        """A bucket name no other test in the session uses (valid S3 naming)."""
        return f"{prefix}-{next(self._counter)}-{uuid.uuid4().hex[:8]}".lower()

    def client(self) -> Any:
        """A boto3 S3 client for this endpoint."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name=self.region,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
        )

    def settings_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :class:`rps.settings.Settings` pointing S3 at this server."""
        from pydantic import SecretStr

        return {
            "s3_endpoint_url": self.url,
            "s3_region": self.region,
            "aws_access_key_id": SecretStr(self.access_key),
            "aws_secret_access_key": SecretStr(self.secret_key),
        }


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[S3Endpoint]:
    """moto's S3 server on 127.0.0.1 for the whole session, with test AWS credentials.

    The environment gets ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_DEFAULT_REGION``
    set to test values (and AWS profile/config variables removed) for the session, so code
    using the default credential chain never reaches real AWS credentials.
    """
    pytest.importorskip("moto")
    from moto.server import ThreadedMotoServer

    patch = pytest.MonkeyPatch()
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL"):
        patch.delenv(name, raising=False)
    patch.setenv("AWS_ACCESS_KEY_ID", TEST_ACCESS_KEY)
    patch.setenv("AWS_SECRET_ACCESS_KEY", TEST_SECRET_KEY)
    patch.setenv("AWS_DEFAULT_REGION", TEST_REGION)
    patch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)  # 0: any free port
    server.start()
    host, port = server.get_host_and_port()
    endpoint = S3Endpoint(url=f"http://{host}:{port}")
    logger.info("moto S3 server at %s", endpoint.url)
    try:
        yield endpoint
    finally:
        server.stop()
        patch.undo()


@pytest.fixture(scope="session")
def s3_server(s3_endpoint: S3Endpoint) -> S3Endpoint:
    """Alias of :func:`s3_endpoint`."""
    return s3_endpoint


from tests.integration.conftest_mlflow import mlflow_server  # noqa: E402, F401 - MLflow server
from tests.integration.conftest_serving import (  # noqa: E402, F401 - serving fixtures
    serving_bundle,
    serving_bundle_v2,
    serving_factory,
    serving_server,
    trajectory_bundle,
)
