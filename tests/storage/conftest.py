"""Fixtures shared by the storage tests (test_remote.py, the store kit)."""
from __future__ import annotations

import pytest
from servers import s3_server


@pytest.fixture(scope="session")
def s3():
    """moto's S3 server on loopback, with a bucket "bucket"; yields its storage_options.
    One server for the session: every test writes under a fresh prefix of its own."""
    with s3_server() as options:
        import boto3  # noqa: PLC0415 - comes with moto

        boto3.client("s3", aws_access_key_id="testing", aws_secret_access_key="testing",
                     **options["client_kwargs"]).create_bucket(Bucket="bucket")
        yield options
