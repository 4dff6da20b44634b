"""Admin change lists from the primary alone against primary + one streaming replica, in the same run, under load.

    .venv/bin/python bench/replica_bench.py --songs 1000000 --users 20000 | tee bench/results/replica.txt
    .venv/bin/python bench/replica_bench.py --smoke          # a few hundred rows, seconds

The seed file (bench/_common.seeded) is loaded by `transferdb` into a throwaway PostgreSQL server
(tests/pgserver.py), which then gets a streaming replica (tests/pgreplica.py, `pg_basebackup -R`). Two gunicorn
servers run the same code on the same primary: "primary" without DATABASE_REPLICA_URLS, "replica" with it. All
the time a writer calls `song_request` at `--rate` per second (bench/_load.py) and `runworker` works the queue.
Phases of `--seconds` each: first no readers (the load's own cost on the primary), then `--rounds` times the
primary server then the replica server, each read by `--readers` threads over real HTTP, each thread logged in
as staff with its own session, requesting /admin/songs/song/ back to back. Per phase: pages per second, p50 and
p99, which database the page says served it, and the primary's CPU time per page, two ways from /proc/<pid>/stat:
the CPU of the primary's backends that served the readers' server (its connections carry an application_name;
kept open for the run) divided by the pages; beside it the whole primary's CPU in the phase (postmaster,
reaped and live children), with the no-reader phase's for the load's own share. Last, the read-your-writes check's
cost: the router's decision per request with no recorded position and with one, and the position a writing
request records (`pg_current_wal_insert_lsn()`), timed in a process configured like the replica server.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from _common import seeded  # noqa: E402

from tests.pgreplica import streaming_replica  # noqa: E402
from tests.pgserver import find_bindir, free_port, postgres_server  # noqa: E402

RESULTS = Path(os.environ.get("SONGSGEN_BENCH_RESULTS") or REPO / "bench" / "results") / "replica"
LOAD = REPO / "bench" / "_load.py"
DB = "songsgen_bench"
ADMIN_USER, ADMIN_PASSWORD = "bench-live-admin", "x" * 20  # _load.py prepare's superuser
PAGE = "/admin/songs/song/"
TICK = os.sysconf("SC_CLK_TCK")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--songs", type=int, default=1_000_000, help="songs seeded (default 1,000,000)")
    parser.add_argument("--users", type=int, default=20_000, help="users seeded (default 20,000)")
    parser.add_argument("--readers", type=int, default=8, help="concurrent readers (default 8)")
    parser.add_argument("--rate", type=float, default=200.0, help="the writer's songs per second (default 200)")
    parser.add_argument("--seconds", type=float, default=60.0, help="measured seconds per phase (default 60)")
    parser.add_argument("--warmup", type=float, default=5.0, help="unmeasured seconds before each phase (default 5)")
    parser.add_argument("--rounds", type=int, default=2, help="primary/replica phase pairs (default 2)")
    parser.add_argument("--smoke", action="store_true", help="300 songs, 3 s phases, one round: about a minute in all")
    parser.add_argument("--probe-ryw", type=int, default=0, help=argparse.SUPPRESS)  # the timing child
    args = parser.parse_args(argv)
    if args.smoke:
        args.songs, args.users, args.seconds, args.warmup, args.rounds = 300, 20, 3.0, 1.0, 1
    return args


def on(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))


def base_env(database_url: str, work: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_REPLICA_URLS", "DEBUG")}
    env.update(DATABASE_URL=database_url, SONGSGEN_DATA_DIR=str(work), SECRET_KEY="bench-only",
               ALLOWED_HOSTS="127.0.0.1", SONGSGEN_SECURE_SSL_REDIRECT="0", SONGSGEN_SECURE_COOKIES="0",
               DJANGO_SETTINGS_MODULE="songsgen.settings")
    return env


def tagged(env: dict[str, str], app: str) -> dict[str, str]:
    """The server's connections to the primary named `app` in pg_stat_activity (its backends' CPU is measured)."""
    # connections kept for the whole run: a backend that closed within a phase would take its CPU time with it
    return dict(env, DATABASE_URL=f"{env['DATABASE_URL']}?application_name={app}", SONGSGEN_CONN_MAX_AGE="3600")


def manage(env: dict[str, str], *args: str) -> None:
    subprocess.run([sys.executable, str(REPO / "manage.py"), *args], env=env, cwd=REPO, check=True)


# --- the primary's CPU time --------------------------------------------------------------------------------
def _stat(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2:].split()  # from field 3 (state) on


def server_cpu(postmaster: int) -> float:
    """CPU seconds the server's processes have used: the postmaster's own and reaped children's, live children's."""
    fields = _stat(postmaster)
    ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))  # utime, stime, cutime, cstime
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            child = _stat(int(entry.name))
        except (OSError, ValueError):
            continue  # exited meanwhile (then counted in cutime once reaped)
        if child[1] == str(postmaster):
            ticks += int(child[11]) + int(child[12])
    return ticks / TICK


def backends_cpu(url: str, app: str) -> dict[int, float]:
    """CPU seconds used so far by each of the primary's backends serving `app` (its connections' application_name)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        pids = [row[0] for row in conn.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s",
                                               (app,))]
    cpu = {}
    for pid in pids:
        try:
            fields = _stat(pid)
        except OSError:
            continue
        cpu[pid] = (int(fields[11]) + int(fields[12])) / TICK
    return cpu


def postmaster_of(url: str) -> int:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
        ppid = int(_stat(backend)[1])
    return ppid


# --- the readers ----------------------------------------------------------------------------------------
class Reader(threading.Thread):
    """One staff user's browser: logs in over HTTP, then requests the change list back to back."""

    def __init__(self, port: int, phase: dict[str, Any]) -> None:
        super().__init__(daemon=True)
        self.port, self.phase = port, phase
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, body: str | None = None) -> tuple[int, str]:
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        if body is not None:
            headers.update({"Content-Type": "application/x-www-form-urlencoded",
                            "Referer": f"http://127.0.0.1:{self.port}/admin/login/"})
        self.conn.request(method, path, body=body, headers=headers)
        response = self.conn.getresponse()
        for name, value in response.getheaders():
            if name.lower() == "set-cookie":
                key, _, rest = value.partition("=")
                self.cookies[key] = rest.split(";", 1)[0]
        return response.status, response.read().decode("utf-8", "replace")

    def login(self) -> None:
        _, page = self.request("GET", "/admin/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        assert token, "no CSRF token on the login page"
        status, _ = self.request("POST", "/admin/login/?next=/admin/", urlencode(
            {"csrfmiddlewaretoken": token.group(1), "username": ADMIN_USER, "password": ADMIN_PASSWORD,
             "next": "/admin/"}))
        assert status == 302 and "sessionid" in self.cookies, f"login failed (HTTP {status})"

    def run(self) -> None:
        phase = self.phase
        while not phase["stop"]:
            began = time.perf_counter()
            try:
                status, body = self.request("GET", PAGE)
            except (OSError, http.client.HTTPException) as exc:
                phase["errors"].append(f"{type(exc).__name__}: {exc}")
                self.conn.close()
                continue
            done = time.perf_counter()
            if not phase["measuring"]:
                continue
            if status != 200:
                phase["errors"].append(f"HTTP {status}")
                continue
            served = re.search(r'data-served-by="([^"]+)"', body)
            phase["latencies"].append(done - began)
            phase["served"].append(served.group(1) if served else "primary")


def run_phase(name: str, port: int | None, readers: int, args: argparse.Namespace, postmaster: int,
              replica_postmaster: int, primary: str) -> dict[str, Any]:
    """One phase: readers on `port` (none: the load alone); pages, latencies, the servers' CPU."""
    phase: dict[str, Any] = {"stop": False, "measuring": False, "latencies": [], "served": [], "errors": []}
    threads = [Reader(port, phase) for _ in range(readers)] if port else []
    for thread in threads:
        thread.login()
        thread.start()
    time.sleep(args.warmup)
    app = f"bench-{name}"
    cpu0, rcpu0, t0 = server_cpu(postmaster), server_cpu(replica_postmaster), time.monotonic()
    backends0 = backends_cpu(primary, app)
    phase["measuring"] = True
    time.sleep(args.seconds)
    phase["measuring"] = False
    cpu1, rcpu1, t1 = server_cpu(postmaster), server_cpu(replica_postmaster), time.monotonic()
    backends1 = backends_cpu(primary, app)
    readers_cpu = sum(cpu - backends0.get(pid, 0.0) for pid, cpu in backends1.items())
    phase["stop"] = True
    for thread in threads:
        thread.join()
    lat = sorted(phase["latencies"])
    pages = len(lat)
    served = {db: phase["served"].count(db) for db in sorted(set(phase["served"]))}
    return {"name": name, "seconds": round(t1 - t0, 2), "pages": pages, "pages_per_s": round(pages / (t1 - t0), 2),
            "p50_ms": round(1000 * lat[len(lat) // 2], 1) if lat else None,
            "p99_ms": round(1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))], 1) if lat else None,
            "primary_cpu_s": round(cpu1 - cpu0, 2), "readers_primary_cpu_s": round(readers_cpu, 3),
            "replica_cpu_s": round(rcpu1 - rcpu0, 2), "served": served,
            "errors": len(phase["errors"]), "first_error": phase["errors"][0] if phase["errors"] else "",
            "load": " ".join(f"{v:.1f}" for v in os.getloadavg())}


# --- the processes ----------------------------------------------------------------------------------------
@contextmanager
def running(cmds: list[tuple[list[str], dict[str, str], Path]]) -> Iterator[None]:
    procs = [subprocess.Popen(cmd, env=env, cwd=REPO, stdout=log.open("w"), stderr=subprocess.STDOUT)
             for cmd, env, log in cmds]
    try:
        yield
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def wait_http(port: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/admin/login/")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"the server on port {port} did not answer within {timeout:g} s")
        time.sleep(0.5)


def gunicorn(port: int, readers: int) -> list[str]:
    return [str(Path(sys.executable).parent / "gunicorn"), "songsgen.wsgi:application", "-b", f"127.0.0.1:{port}",
            "--workers", "2", "--threads", str(max(1, readers // 2)), "--timeout", "120"]


# --- the read-your-writes check's cost (a child configured like the replica server) ------------------------
def probe_ryw(n: int) -> None:
    import django

    django.setup()
    from django.db import connections

    from songs.models import Song
    from songsgen.db.replicas import ReplicaRouter, health, replica_reads
    from songsgen.db.replicas.context import primary_lsn

    router = ReplicaRouter()
    lsn = primary_lsn()
    deadline = time.monotonic() + 60
    while health.state("replica1").replay_lsn < lsn:  # so that a recorded position does not send reads away
        assert time.monotonic() < deadline, "the replica did not replay the probe's position"
        health.forget()
        time.sleep(0.1)

    def decide(required: int) -> float:
        """Per request: a fresh `Reads`, the connection health check due again, one routed read."""
        began = time.perf_counter()
        for _ in range(n):
            for conn in connections.all(initialized_only=True):
                conn.health_check_done = False
            with replica_reads(required_lsn=required):
                assert router.db_for_read(Song) == "replica1"
        return (time.perf_counter() - began) / n * 1e6

    decide(0)  # connect, first look at the replica
    rounds = [(decide(0), decide(lsn)) for _ in range(5)]
    began = time.perf_counter()
    for _ in range(n):
        primary_lsn()
    record = (time.perf_counter() - began) / n * 1e6
    print(json.dumps({"without_us": round(statistics.median(r[0] for r in rounds), 1),
                      "with_us": round(statistics.median(r[1] for r in rounds), 1),
                      "record_us": round(record, 1), "n": n}))


# --- the run ------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.probe_ryw:
        probe_ryw(args.probe_ryw)
        return 0
    bindir = find_bindir()
    if bindir is None or not (bindir / "pg_basebackup").is_file():
        raise SystemExit("PostgreSQL binaries (initdb, pg_ctl, pg_basebackup) not found.")
    RESULTS.mkdir(parents=True, exist_ok=True)
    work = RESULTS / f"run-{args.songs}"
    work.mkdir(exist_ok=True)

    def out(line: str) -> None:
        print(line, flush=True)

    started = time.monotonic()
    seed = RESULTS / f"seed_{args.songs}_{args.users}.db"
    seeded(seed, args.songs, args.users)
    sqlite_env = base_env(f"sqlite:///{seed}", work)
    manage(sqlite_env, "migrate", "--plain", "-v0")  # today's schema
    manage(sqlite_env, "collectstatic", "--noinput", "-v0")  # gunicorn with DEBUG off serves the manifest's files
    out(f"songs {args.songs:,}, users {args.users:,}, readers {args.readers}, writer {args.rate:g}/s, phases "
        f"{args.seconds:g} s (+{args.warmup:g} s warm-up), {args.rounds} round(s); cpus {os.cpu_count()}, load "
        f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}; PostgreSQL {bindir}")
    with postgres_server(bindir) as server:
        import psycopg

        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {DB}")
        primary = on(server, DB)
        env = dict(base_env(primary, work), SONGSGEN_PG_BINDIR=str(bindir))
        manage(env, "migrate", "--plain", "-v0")
        manage(env, "transferdb", "--from", f"sqlite:///{seed}", "--to", primary, "--truncate", "-v0")
        subprocess.run([sys.executable, str(LOAD), "prepare"], env=env, cwd=REPO, check=True)
        with psycopg.connect(primary, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
            size = conn.execute(f"SELECT pg_size_pretty(pg_database_size('{DB}'))").fetchone()[0]  # type: ignore
        out(f"loaded into PostgreSQL ({size}) in {time.monotonic() - started:.0f} s")
        with streaming_replica(server, bindir) as replica:
            replica.wait_caught_up()
            replica_env = dict(env, DATABASE_REPLICA_URLS=replica.url(DB))
            ports = {"primary": free_port(), "replica": free_port()}
            stop = work / "STOP"
            stop.unlink(missing_ok=True)
            procs = [(gunicorn(ports["primary"], args.readers), tagged(env, "bench-primary"),
                      work / "gunicorn-primary.log"),
                     (gunicorn(ports["replica"], args.readers), tagged(replica_env, "bench-replica"),
                      work / "gunicorn-replica.log"),
                     ([sys.executable, str(LOAD), "writer", str(work / "writer.jsonl"), str(stop), "--rate",
                       str(args.rate)], env, work / "writer.log"),
                     ([sys.executable, str(REPO / "manage.py"), "runworker"], env, work / "worker.log")]
            with running(procs):
                for port in ports.values():
                    wait_http(port)
                postmaster, replica_postmaster = postmaster_of(primary), postmaster_of(replica.url())
                out(f"servers up, basebackup and load started, {time.monotonic() - started:.0f} s in\n")
                results = [run_phase("load only", None, 0, args, postmaster, replica_postmaster, primary)]
                for _ in range(args.rounds):
                    for name in ("primary", "replica"):
                        results.append(run_phase(name, ports[name], args.readers, args, postmaster,
                                                 replica_postmaster, primary))
                        out(f"  {json.dumps(results[-1])}")
                stop.touch()
            probe = subprocess.run([sys.executable, __file__, "--probe-ryw", "2000"], env=replica_env, cwd=REPO,
                                   check=True, capture_output=True, text=True)
            ryw = json.loads(probe.stdout.strip().splitlines()[-1])
    writes = [json.loads(line) for line in (work / "writer.jsonl").read_text().splitlines()]
    oks = [w for w in writes if w["kind"] == "ok"]
    span = (oks[-1]["t"] - oks[0]["t"]) if len(oks) > 1 else 0.0
    report(results, ryw, len(oks), span, sum(w["kind"] == "error" for w in writes), out)
    (work / "result.json").write_text(json.dumps({"phases": results, "ryw": ryw}, indent=1))
    out(f"\nwall {time.monotonic() - started:.0f} s; load average at the end "
        f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    return 0


def report(results: list[dict[str, Any]], ryw: dict[str, Any], writes: int, span: float, errors: int,
           out: Any) -> None:
    idle = results[0]
    idle_rate = idle["primary_cpu_s"] / idle["seconds"]
    out(f"\nthe load alone: primary {idle['primary_cpu_s']} CPU s in {idle['seconds']} s ({idle_rate:.2f} cores); "
        f"writer {writes:,} songs in {span:.0f} s ({writes / span if span else 0:.0f}/s), {errors} errors")
    out("\n| phase | pages/s | p50 ms | p99 ms | served by | primary CPU ms/page (readers' backends) | whole primary "
        "CPU s (load alone: see above) | replica CPU s | errors | load |")
    out("| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | --- |")
    for phase in results[1:]:
        served = ", ".join(f"{db} {n}" for db, n in phase["served"].items())
        backends = 1000 * phase["readers_primary_cpu_s"] / max(1, phase["pages"])
        out(f"| {phase['name']} | {phase['pages_per_s']} | {phase['p50_ms']} | {phase['p99_ms']} | {served} | "
            f"{backends:.2f} | {phase['primary_cpu_s']} | "
            f"{phase['replica_cpu_s']} | {phase['errors']} | {phase['load']} |")
    out(f"\nread-your-writes, per request (median of 5 x {ryw['n']}): the router's decision {ryw['without_us']} µs "
        f"without a recorded position, {ryw['with_us']} µs with one (the replica past it); recording the position "
        f"after a writing request (one query to the primary) {ryw['record_us']} µs")


if __name__ == "__main__":
    raise SystemExit(main())
