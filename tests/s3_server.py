"""A moto S3 server on 127.0.0.1 for tests, and the standard AWS_* variables that point jobs at it.

    with moto_s3("bucket") as (client, env):
        subprocess.run([...], env={**os.environ, **env})
"""

from __future__ import annotations

import logging
import socket
from contextlib import contextmanager
from typing import Iterator

import pytest


@contextmanager
def moto_s3(bucket: str, secret: str = "s") -> Iterator[tuple[object, dict]]:
    """Start a server, create `bucket`; yields (boto3 client, env). Skips the test without boto3/moto."""
    boto3 = pytest.importorskip("boto3")
    moto_server = pytest.importorskip("moto.server")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server.start()
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": secret,
           "AWS_REGION": "us-east-1"}
    try:
        client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_REGION"],
                              aws_access_key_id="k", aws_secret_access_key=secret)
        client.create_bucket(Bucket=bucket)
        yield client, env
    finally:
        server.stop()
