"""Benchmark of the serving gateway: direct vs tuneops' gateway vs MLflow's own AI Gateway.

An upstream answers OpenAI-shaped chat completions after a fixed ``--latency-ms`` (50 ms; an
asyncio server in its own process). Load is ``--concurrency`` (64) aiohttp clients for a fixed
``--duration`` per target, request logging on everywhere; then ``--c1-requests`` sequential requests
per target (concurrency 1). Targets, printed side by side:

- ``direct``: the upstream itself;
- ``tuneops``: ``tuneops serve gateway`` (a real process) on a fresh project: MLflow registry in
  SQLite, versions 1 (champion) and 2 (challenger) with a 50/50 sticky split, every request in
  the request log (SQLite state database, spool fsync'd);
- ``mlflow``: ``mlflow server`` (SQLite backend) with its AI Gateway: an endpoint splitting 50/50
  (``REQUEST_BASED_TRAFFIC_SPLIT``) between two model definitions (provider ``openai`` with
  ``api_base`` = the upstream), every request traced (usage tracking on).

Reported per target: RPS, latency p50/p99 and the latency *added* over direct (same percentile),
at concurrency 64 and at 1; and log completeness: request-log answer rows (tuneops) or MLflow
traces (mlflow) against the requests answered with 200; and ``cpu_ms_per_request``, the CPU the
target's own process tree spent per request answered at concurrency 64 (direct: the upstream's;
a gateway: its own hop), which unlike RPS does not depend on what else the machine runs.
``--soak 300`` then loads the tuneops
gateway for 300 s more and reports its RSS growth (first sample after 30 s of warm-up).

Usage::

    python bench/gateway_bench.py                       # 20 s per target, c=64, 50 ms upstream
    python bench/gateway_bench.py --duration 5 --skip-mlflow
    python bench/gateway_bench.py --soak 300

Goals (issue 11): tuneops >= 0.85x direct RPS; added latency at concurrency 1 <= 2 ms p50 and
<= 5 ms p99; request-log rows == requests answered; soak RSS growth < 10%.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MODEL = "bench-model"
QUESTION = [{"role": "user", "content": "Is hail damage to a parked car covered by the policy?"}]
ANSWER = "Yes: hail damage to a parked car is covered under the comprehensive section, minus the excess."

# ---------------------------------------------------------------------------------------------
# The upstream: a minimal HTTP/1.1 keep-alive server on asyncio (its own process).
# ---------------------------------------------------------------------------------------------


def _completion(model: str, n: int) -> bytes:
    body = {
        "id": f"chatcmpl-bench-{n}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": ANSWER, "refusal": None},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {"prompt_tokens": 11, "completion_tokens": 17, "total_tokens": 28},
    }
    return json.dumps(body).encode()


def serve_upstream(port: int, latency_s: float) -> None:
    """Serve until killed; prints ``listening <port>`` when ready."""
    import socket

    counter = 0
    models = json.dumps(
        {
            "object": "list",
            "data": [
                {"id": m, "object": "model", "created": 0, "owned_by": "bench"}
                for m in ("ft:bench:v1", "ft:bench:v2")
            ],
        }
    ).encode()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal counter
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path = lines[0].split(" ")[:2]
                length = 0
                for line in lines[1:]:
                    if line[:15].lower() == "content-length:":
                        length = int(line[15:].strip())
                raw = await reader.readexactly(length) if length else b""
                if method == "GET" and path.rstrip("/").endswith("/models"):
                    status, body = b"200 OK", models
                elif method == "POST" and path.split("?")[0].endswith("/chat/completions"):
                    await asyncio.sleep(latency_s)
                    counter += 1
                    try:
                        model = str(json.loads(raw).get("model", "m"))
                    except ValueError:
                        model = "m"
                    status, body = b"200 OK", _completion(model, counter)
                else:
                    status, body = (
                        b"404 Not Found",
                        b'{"error":{"message":"not found","type":"invalid_request_error"}}',
                    )
                writer.write(
                    b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\nContent-Length: "
                    + str(len(body)).encode() + b"\r\n\r\n" + body
                )  # fmt: skip
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
        print(f"listening {port}", flush=True)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


# ---------------------------------------------------------------------------------------------
# Load
# ---------------------------------------------------------------------------------------------


@dataclass
class Load:
    """What one load phase saw: latencies of answered requests (s), errors, wall time."""

    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0

    @property
    def answered(self) -> int:
        return len(self.latencies)

    @property
    def rps(self) -> float:
        return self.answered / self.wall_s if self.wall_s else 0.0

    def pct_ms(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000


async def _load(url: str, model: str, concurrency: int, duration_s: float | None, requests: int | None,
                headers: dict[str, str]) -> Load:  # fmt: skip
    """``concurrency`` workers posting chat completions until ``duration_s`` or ``requests`` done."""
    import aiohttp

    result = Load()
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=30)
    started = time.perf_counter()
    stop_at = started + duration_s if duration_s else None
    remaining = [requests or 0]

    async def worker(session: aiohttp.ClientSession, w: int) -> None:
        i = 0
        while True:
            if stop_at is not None and time.perf_counter() >= stop_at:
                return
            if requests is not None:
                if remaining[0] <= 0:
                    return
                remaining[0] -= 1
            i += 1
            body = {"model": model, "messages": QUESTION, "user": f"user-{w}-{i}"}
            t0 = time.perf_counter()
            try:
                async with session.post(url, json=body, headers=headers) as reply:
                    await reply.read()
                    if reply.status == 200:
                        result.latencies.append(time.perf_counter() - t0)
                    else:
                        key = f"http {reply.status}"
                        result.errors[key] = result.errors.get(key, 0) + 1
            except (TimeoutError, aiohttp.ClientError) as exc:
                key = type(exc).__name__
                result.errors[key] = result.errors.get(key, 0) + 1

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(worker(session, w) for w in range(concurrency)))
    result.wall_s = time.perf_counter() - started
    return result


def load(url: str, model: str, concurrency: int, *, duration_s: float | None = None,
         requests: int | None = None, headers: dict[str, str] | None = None) -> Load:  # fmt: skip
    return asyncio.run(_load(url, model, concurrency, duration_s, requests, headers or {}))


# ---------------------------------------------------------------------------------------------
# Targets
# ---------------------------------------------------------------------------------------------


def _env() -> dict[str, str]:
    from tuneops.settings import QUIET_ENVIRONMENT

    return {**os.environ, **QUIET_ENVIRONMENT}


def start_upstream(latency_ms: float, logs: Path) -> tuple[subprocess.Popen[str], str]:
    from tuneops.processes import free_port

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve-upstream", str(port), "--latency-ms", str(latency_ms)],
        stdout=subprocess.PIPE, stderr=(logs / "upstream.log").open("w"), text=True,
    )  # fmt: skip
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("listening"):
        raise RuntimeError(f"upstream did not start: {line!r}")
    return process, f"http://127.0.0.1:{port}/v1"


@dataclass
class TuneopsGateway:
    process: Any
    url: str
    state_url: str


def start_tuneops(upstream: str, root: Path) -> TuneopsGateway:
    """A project whose two versions are served by the upstream, and ``tuneops serve gateway``."""
    from tuneops.processes import free_port, start_process
    from tuneops.registry.mlflow_store import RegistryStore
    from tuneops.routing_state import RoutingState

    project = root / "project"
    (project / "data").mkdir(parents=True)
    (project / "data" / "train.jsonl").write_text("")
    (project / "tuneops.yaml").write_text(
        f"model:\n  name: {MODEL}\n  base_model: tuneops-tiny\n"
        f"provider:\n  kind: local\n  base_url: {upstream}\n"
        "data:\n  train: data/train.jsonl\n"
    )
    tracking = f"sqlite:///{root / 'mlflow.db'}"
    artifacts = (root / "mlartifacts").as_uri()
    state_url = f"sqlite:///{project / '.tuneops' / 'state.db'}"
    (project / ".tuneops").mkdir()
    store = RegistryStore(tracking, artifacts)
    store.ensure_registered_model(MODEL)
    for version in ("1", "2"):
        tags = {"tuneops.provider": "local", "tuneops.endpoint_model": f"ft:bench:v{version}"}
        store.create_version(MODEL, f"{artifacts}/v{version}", None, tags, "", None)  # type: ignore[arg-type]
    store.set_alias(MODEL, "champion", "1")
    store.set_alias(MODEL, "challenger", "2")
    routing = RoutingState.open(state_url)
    routing.set_rollout(MODEL, challenger_version="2", weight=5000, experiment_id="bench", actor="bench")
    routing.close()
    port = free_port()
    env = {
        **_env(),
        "TUNEOPS_TRACKING_URI": tracking,
        "TUNEOPS_ARTIFACT_ROOT": artifacts,
        "TUNEOPS_STATE_DB_URL": state_url,
    }
    env.pop("TUNEOPS_GATEWAY_API_KEYS", None)
    command = [sys.executable, "-m", "tuneops.cli.main", "serve", "gateway", "--spec",
               str(project / "tuneops.yaml"), "--port", str(port)]  # fmt: skip
    process = start_process(
        "tuneops gateway", command, url=f"http://127.0.0.1:{port}/v1",
        health=f"http://127.0.0.1:{port}/health", log_path=root / "gateway.log", env=env, timeout=180,
    )  # fmt: skip
    return TuneopsGateway(process, f"http://127.0.0.1:{port}/v1", state_url)


def tuneops_rows(state_url: str) -> tuple[int, int]:
    """(answer rows with status 200, distinct request ids among them) in the request log."""
    path = state_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        rows, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT request_id) FROM request_log"
            " WHERE role = 'answer' AND status_code = 200"
        ).fetchone()
    return int(rows), int(distinct)


@dataclass
class MlflowGateway:
    process: Any
    url: str
    db: Path
    experiment_id: str | None


def start_mlflow(upstream: str, root: Path) -> MlflowGateway:
    """``mlflow server`` with an AI Gateway endpoint splitting 50/50 over two model definitions."""
    import httpx

    from tuneops.testing.processes import start_mlflow_server

    db = root / "mlflow-gw.db"
    env = {
        **_env(),
        "MLFLOW_GATEWAY_API_BASE_ALLOWED_SCHEMES": "http,https",
        "MLFLOW_GATEWAY_API_BASE_ALLOW_PRIVATE_IPS": "true",
        "MLFLOW_CRYPTO_KEK_PASSPHRASE": "bench-passphrase-not-a-secret",
    }
    server = start_mlflow_server(
        backend_store_uri=f"sqlite:///{db}", artifacts_destination=(root / "mlgw-artifacts").as_uri(),
        log_dir=root, env=env,
    )  # fmt: skip
    api = f"{server.url}/api/3.0/mlflow/gateway"
    with httpx.Client(timeout=60) as http:

        def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
            reply = http.post(f"{api}/{path}", json=body)
            if reply.status_code != 200:
                raise RuntimeError(f"{path}: {reply.status_code} {reply.text[:500]}")
            return dict(reply.json())

        secret = post("secrets/create", {
            "secret_name": "bench-upstream", "secret_value": {"api_key": "sk-bench-not-a-secret"},
            "provider": "openai", "auth_config": {"api_base": upstream},
        })["secret"]  # fmt: skip
        definitions = [
            post(
                "model-definitions/create",
                {
                    "name": f"bench-v{v}",
                    "secret_id": secret["secret_id"],
                    "provider": "openai",
                    "model_name": f"ft:bench:v{v}",
                },
            )["model_definition"]["model_definition_id"]
            for v in ("1", "2")
        ]
        endpoint = post("endpoints/create", {
            "name": MODEL,
            "model_configs": [{"model_definition_id": d, "linkage_type": "PRIMARY", "weight": 50}
                              for d in definitions],
            "routing_strategy": "REQUEST_BASED_TRAFFIC_SPLIT",
        })["endpoint"]  # fmt: skip
    return MlflowGateway(server, f"{server.url}/gateway/mlflow/v1", db, endpoint.get("experiment_id"))


def mlflow_traces(gateway: MlflowGateway) -> int:
    with sqlite3.connect(gateway.db) as conn:
        return int(conn.execute("SELECT count(*) FROM trace_info").fetchone()[0])


def settled(count: Any, quiet_s: float = 3.0, limit_s: float = 60.0) -> int:
    """``count()`` once it stopped changing for ``quiet_s`` (asynchronous writers catching up)."""
    last, since, deadline = count(), time.monotonic(), time.monotonic() + limit_s
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = count()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            break
    return int(last)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and its children so far (a server's own cost, load-independent)."""
    import psutil

    process = psutil.Process(pid)
    total = 0.0
    for member in [process, *process.children(recursive=True)]:
        try:
            times = member.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def rss_mb(pid: int) -> float:
    import psutil

    return float(psutil.Process(pid).memory_info().rss) / 2**20


# ---------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load per target")
    parser.add_argument("--c1-requests", type=int, default=500, help="sequential requests per target")
    parser.add_argument("--skip-mlflow", action="store_true")
    parser.add_argument("--soak", type=float, default=0.0, help="seconds of soak on tuneops (RSS)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--serve-upstream", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_upstream is not None:
        serve_upstream(args.serve_upstream, args.latency_ms / 1000)
        return

    root = Path(tempfile.mkdtemp(prefix="tuneops-gw-bench-"))
    print(f"work folder {root}; load average {os.getloadavg()} on {os.cpu_count()} CPUs", flush=True)
    upstream, upstream_url = start_upstream(args.latency_ms, root)
    results: dict[str, dict[str, Any]] = {}
    phases: dict[str, tuple[Load, Load]] = {}
    gateway: TuneopsGateway | None = None
    mlflow: MlflowGateway | None = None
    try:
        gateway = start_tuneops(upstream_url, root)
        targets: list[tuple[str, str, str, int]] = [  # name, url, model, the pid whose CPU is its cost
            ("direct", f"{upstream_url}/chat/completions", "ft:bench:v1", upstream.pid),
            ("tuneops", f"{gateway.url}/chat/completions", MODEL, gateway.process.process.pid),
        ]
        if not args.skip_mlflow:
            mlflow = start_mlflow(upstream_url, root)
            targets.append(("mlflow", f"{mlflow.url}/chat/completions", MODEL, mlflow.process.process.pid))
        answered: dict[str, int] = {}
        cpu_ms: dict[str, float] = {}
        for name, url, model, pid in targets:
            warm = load(url, model, 8, requests=200)  # warm-up: connections, caches, lazy imports
            cpu_before = cpu_seconds(pid)
            wide = load(url, model, args.concurrency, duration_s=args.duration)
            cpu_ms[name] = (cpu_seconds(pid) - cpu_before) * 1000 / max(1, wide.answered)
            one = load(url, model, 1, requests=args.c1_requests)
            phases[name] = (wide, one)
            answered[name] = warm.answered + wide.answered + one.answered
            print(f"{name}: {wide.rps:.0f} rps at c={args.concurrency}, errors {wide.errors}", flush=True)
        rss: dict[str, Any] = {}
        if args.soak:
            pid = gateway.process.process.pid
            url = f"{gateway.url}/chat/completions"
            warm = load(url, MODEL, args.concurrency, duration_s=30)
            first = rss_mb(pid)
            samples = [first]
            soaked = Load()
            end = time.monotonic() + args.soak
            while time.monotonic() < end:
                chunk = load(url, MODEL, args.concurrency, duration_s=min(30.0, end - time.monotonic()))
                soaked.latencies += chunk.latencies
                samples.append(rss_mb(pid))
            answered["tuneops"] += warm.answered + soaked.answered
            rss = {"soak_s": args.soak, "rss_first_mb": round(first, 1), "rss_last_mb": round(samples[-1], 1),
                   "rss_max_mb": round(max(samples), 1),
                   "growth_pct": round((samples[-1] - first) / first * 100, 1),
                   "soak_requests": soaked.answered}  # fmt: skip
        gateway.process.stop()  # SIGTERM: flushes the request log
        rows, distinct = tuneops_rows(gateway.state_url)
        log = {"tuneops": (rows, distinct)}
        if mlflow is not None:
            traces = settled(lambda: mlflow_traces(mlflow))  # type: ignore[union-attr]
            log["mlflow"] = (traces, traces)
    finally:
        if gateway is not None:
            gateway.process.stop()
        if mlflow is not None:
            mlflow.process.stop()
        upstream.terminate()
        upstream.wait(10)

    direct_wide, direct_one = phases["direct"]
    for name, (wide, one) in phases.items():
        entry: dict[str, Any] = {
            "rps": round(wide.rps, 1),
            "rps_vs_direct": round(wide.rps / direct_wide.rps, 3) if direct_wide.rps else None,
            "p50_ms": round(wide.pct_ms(0.5), 2),
            "p99_ms": round(wide.pct_ms(0.99), 2),
            "added_p50_ms": round(wide.pct_ms(0.5) - direct_wide.pct_ms(0.5), 2),
            "added_p99_ms": round(wide.pct_ms(0.99) - direct_wide.pct_ms(0.99), 2),
            "errors": wide.errors,
            "cpu_ms_per_request": round(cpu_ms[name], 3),
            "c1_p50_ms": round(one.pct_ms(0.5), 2),
            "c1_p99_ms": round(one.pct_ms(0.99), 2),
            "c1_added_p50_ms": round(one.pct_ms(0.5) - direct_one.pct_ms(0.5), 2),
            "c1_added_p99_ms": round(one.pct_ms(0.99) - direct_one.pct_ms(0.99), 2),
            "c1_errors": one.errors,
            "answered": answered[name],
        }
        if name in log:
            entry["log_rows"], entry["log_distinct"] = log[name]
            entry["log_complete"] = log[name][0] == answered[name] and log[name][1] == answered[name]
        results[name] = entry
    if rss:
        results["tuneops"]["soak"] = rss
    columns = ["rps", "rps_vs_direct", "cpu_ms_per_request", "p50_ms", "p99_ms", "added_p50_ms",
               "added_p99_ms", "c1_p50_ms",
               "c1_p99_ms", "c1_added_p50_ms", "c1_added_p99_ms", "answered", "log_rows", "log_complete",
               "errors"]  # fmt: skip
    print(f"\nupstream latency {args.latency_ms:g} ms, concurrency {args.concurrency},"
          f" {args.duration:g} s per target, {args.c1_requests} sequential requests;"
          f" load average now {os.getloadavg()}")  # fmt: skip
    names = list(results)
    print(f"{'':>16}" + "".join(f"{n:>14}" for n in names))
    for column in columns:
        print(f"{column:>16}" + "".join(f"{results[n].get(column, '-')!s:>14}" for n in names))
    if rss:
        print(f"soak: {rss}")
    t = results["tuneops"]

    def verdict(ok: bool) -> str:
        return "held" if ok else "MISSED"

    print("\ngoals:")
    print(f"  tuneops >= 0.85x direct RPS: {t['rps_vs_direct']} -> {verdict(t['rps_vs_direct'] >= 0.85)}")
    print(f"  added p50 at c=1 <= 2 ms: {t['c1_added_p50_ms']} -> {verdict(t['c1_added_p50_ms'] <= 2)}")
    print(f"  added p99 at c=1 <= 5 ms: {t['c1_added_p99_ms']} -> {verdict(t['c1_added_p99_ms'] <= 5)}")
    print(
        f"  request-log rows == answered: {t['log_rows']} vs {t['answered']} -> {verdict(t['log_complete'])}"
    )
    if "mlflow" in results and results["mlflow"]["rps"]:
        print(f"  tuneops / MLflow AI Gateway RPS: {t['rps'] / results['mlflow']['rps']:.1f}x")
    if rss:
        print(f"  soak RSS growth < 10%: {rss['growth_pct']}% -> {verdict(rss['growth_pct'] < 10)}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
