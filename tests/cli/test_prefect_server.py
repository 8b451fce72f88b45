"""The project's Prefect server: started before Prefect loads, a new database seeded from the
machine's template, flows recorded in the project's own database.

Each case runs in a fresh interpreter (the server must start before Prefect is imported, and this
test process imported Prefect long ago) against real Prefect servers on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tuneops.cli.prefect_server import project_prefect_server

RUN_A_FLOW_TWICE = """
import json, sys
from pathlib import Path
from tuneops.cli.prefect_server import project_prefect_server

first, second = Path(sys.argv[1]), Path(sys.argv[2])
with project_prefect_server(first) as server:    # new machine: migrates, then keeps the template
    server.wait_ready()
seeded = {}
with project_prefect_server(second) as server:   # new project: starts from the template
    seeded["seeded"] = server._seeded
    server.wait_ready()
    from prefect import flow

    @flow(name="hello")
    def hello(x: int) -> int:
        return x + 1

    seeded["result"] = hello(41)
print(json.dumps(seeded))
"""


@pytest.mark.slow
def test_a_seeded_project_database_serves_flows(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["XDG_CACHE_HOME"] = str(tmp_path / "machine-cache")
    first, second = tmp_path / "first", tmp_path / "second"
    done = subprocess.run(
        [sys.executable, "-c", RUN_A_FLOW_TWICE, str(first), str(second)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome == {"seeded": True, "result": 42}
    templates = list((tmp_path / "machine-cache" / "tuneops" / "templates").glob("prefect-*.db"))
    assert len(templates) == 1
    with sqlite3.connect(second / "prefect.db") as db:  # the flow run is in the project's database
        runs = db.execute(
            "SELECT f.name, r.state_type FROM flow_run r JOIN flow f ON f.id = r.flow_id"
        ).fetchall()
    assert runs == [("hello", "COMPLETED")]
    with sqlite3.connect(first / "prefect.db") as db:
        assert db.execute("SELECT COUNT(*) FROM flow_run").fetchone() == (0,)


def test_a_server_the_user_configured_is_left_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    with project_prefect_server(tmp_path / "home") as server:
        assert server is None
        assert os.environ["PREFECT_API_URL"] == "http://127.0.0.1:4200/api"
    assert not (tmp_path / "home").exists()
