"""Fixtures shared by the whole suite: repo paths and a real S3-compatible server (moto).

The S3 server runs in this process (moto server mode, HTTP on 127.0.0.1, a free port), so code
under test talks real S3 over HTTP through s3fs/boto3. `moto.mock_aws` is not used: it does not
work with s3fs (aiobotocore).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from shared_paths import REPO_ROOT, SHARED_DIR  # noqa: E402 - after the env defaults above

S3_KEY = "test"
S3_SECRET = "test"
S3_REGION = "us-east-1"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return SHARED_DIR


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """An in-process moto S3 server on 127.0.0.1; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    # Port 0: the OS picks a free port at bind time (no race with other test runs).
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake AWS credentials for one test, and no route to real AWS (restored afterwards)."""
    empty = os.devnull
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", S3_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", S3_REGION)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-metadata lookups
    monkeypatch.setenv("AWS_CONFIG_FILE", empty)  # ignore the user's ~/.aws
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", empty)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    no_proxy = ",".join(filter(None, [os.environ.get("NO_PROXY", ""), "127.0.0.1", "localhost"]))
    monkeypatch.setenv("NO_PROXY", no_proxy)
    monkeypatch.setenv("no_proxy", no_proxy)


@pytest.fixture
def s3_storage_options(s3_server: str, s3_env: None) -> dict[str, Any]:
    """fsspec/s3fs options for the moto server (no region in client_kwargs: see env notes)."""
    return {"key": S3_KEY, "secret": S3_SECRET, "client_kwargs": {"endpoint_url": s3_server}}


@pytest.fixture
def s3_bucket(s3_server: str, s3_storage_options: dict[str, Any]) -> Iterator[str]:
    """A fresh, uniquely named, empty bucket for one test; yields "s3://<bucket>"."""
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=s3_server,
        aws_access_key_id=S3_KEY,
        aws_secret_access_key=S3_SECRET,
        region_name=S3_REGION,
    )
    bucket = f"test-{uuid.uuid4().hex[:16]}"
    client.create_bucket(Bucket=bucket)
    try:
        yield f"s3://{bucket}"
    finally:
        paginator = client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket):
            keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=bucket, Delete={"Objects": keys})
        client.delete_bucket(Bucket=bucket)
