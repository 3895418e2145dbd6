"""A lake whose data lives in object storage (s3:// through httpfs), against a real S3 API server.

moto's server speaks the S3 protocol over a socket, as MinIO or S3 itself
would; the catalog is the session's PostgreSQL server. Credentials and the
endpoint come from the standard AWS environment variables, as users set them.
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from support.lake_workload import answers as _answers
from support.lake_workload import record_all as _record_all
from support.lakes import LakeFactory
from support.nodes import free_port
from usage_metering import Metering
from usage_metering.schemas import EventStatus
from usage_metering.store import Lake
from usage_metering.store.lake import s3_secret_sql

BUCKET = "metering-lake"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    port = free_port()
    server = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(urllib.request.Request(f"{endpoint}/{BUCKET}", method="PUT"), timeout=2)
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "the S3 server did not start"
                time.sleep(0.2)
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=30)


def _objects(endpoint: str, prefix: str) -> list[str]:
    listing = urllib.request.urlopen(f"{endpoint}/{BUCKET}?list-type=2&prefix={prefix}", timeout=10).read().decode()
    return [part.split("</Key>")[0] for part in listing.split("<Key>")[1:]]


def test_a_lake_in_object_storage_answers_as_a_file_does(
    s3_endpoint: str, lakes: LakeFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {"AWS_ACCESS_KEY_ID": "metering", "AWS_SECRET_ACCESS_KEY": "secret",
                        "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": s3_endpoint}.items():
        monkeypatch.setenv(name, value)
    local = lakes.new()  # for its catalog database only
    lake = Lake(local.catalog, f"s3://{BUCKET}/{tmp_path.name}/")
    with Metering.open(tmp_path / "file.duckdb") as on_file, Metering.open(tmp_path / "node", lake=lake) as on_lake:
        assert _record_all(on_lake) == _record_all(on_file)
        report = on_lake.maintain_lake()  # inlined rows go to Parquet objects in the bucket
        assert not report.failed, report.failed
        assert _answers(on_lake) == _answers(on_file)
    objects = _objects(s3_endpoint, tmp_path.name)
    assert any(key.endswith(".parquet") and "/events/" in key for key in objects), objects
    with Metering.open(tmp_path / "node", lake=lake) as again:  # restarted: resends are duplicates
        statuses = {result.status for result in again.record_events([{"tenant_id": "tenant_newco",
                    "metric": "compute_minutes", "quantity": "0.25", "event_id": "newco-0"}])}
        assert statuses == {EventStatus.DUPLICATE}


@pytest.mark.unit
def test_s3_credentials_come_from_the_aws_environment_variables() -> None:
    assert s3_secret_sql({}) is None
    plain = s3_secret_sql({"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "AWS_DEFAULT_REGION": "eu-west-1"})
    assert plain == "CREATE TEMPORARY SECRET usage_metering_s3 (TYPE S3, KEY_ID 'k', SECRET 's', REGION 'eu-west-1')"
    minio = s3_secret_sql({"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "it's", "AWS_SESSION_TOKEN": "t",
                           "AWS_ENDPOINT_URL": "http://minio:9000"})
    assert minio is not None
    assert "SECRET 'it''s'" in minio and "SESSION_TOKEN 't'" in minio
    assert "ENDPOINT 'minio:9000', USE_SSL false, URL_STYLE 'path'" in minio
