"""The harness itself: each fixture gives a real, working part."""

from __future__ import annotations

import boto3
import sqlalchemy as sa
from mlflow.tracking import MlflowClient


def test_mlflow_store_is_fresh_and_usable(mlflow_store):
    client = MlflowClient(tracking_uri=mlflow_store.tracking_uri)
    assert [e.name for e in client.search_experiments()] == ["Default"]
    experiment_id = client.create_experiment("harness", artifact_location=mlflow_store.artifact_root)
    run = client.create_run(experiment_id)
    client.log_metric(run.info.run_id, "m", 1.5)
    assert client.get_run(run.info.run_id).data.metrics == {"m": 1.5}


def test_s3_bucket_is_reached_over_http(s3_server, s3_bucket):
    assert s3_server.endpoint_url.startswith("http://127.0.0.1:")
    s3 = boto3.client("s3", endpoint_url=s3_server.endpoint_url)
    s3.put_object(Bucket=s3_bucket, Key="k", Body=b"v")
    assert s3.get_object(Bucket=s3_bucket, Key="k")["Body"].read() == b"v"


def test_postgres_url_is_a_writable_database(postgres_url):
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE t (x int)"))
        conn.execute(sa.text("INSERT INTO t VALUES (7)"))
        assert conn.execute(sa.text("SELECT x FROM t")).scalar_one() == 7
    engine.dispose()


def test_prefect_harness_runs_a_flow(prefect_harness):
    from prefect import flow, task

    @task
    def double(x: int) -> int:
        return 2 * x

    @flow
    def tiny(x: int) -> int:
        return double(x)

    assert tiny(21) == 42
