"""Beacon against nginx's empty_gif, one command, every number a ratio measured in the same run.

    python loadtests/bench.py [--duration 10] [--rounds 3] [--soak 300] [--skip-flusher] [--profile FILE]

Starts its own redis-server (unix socket), then, one at a time so they never share the
core, each server under test pinned to core 0 with `taskset -c 0`: nginx (`empty_gif`,
one worker, no access log), Beacon (`beacon serve`, one worker) and the raw ASGI floor
(`loadtests/floor.py`). wrk runs pinned to core 1. Every round measures every row, and
each row's ratio to nginx is taken within its round; the table shows medians over rounds.
Then: p99 at about half of (a)'s saturation rate, optionally a py-spy profile of (a),
the flusher's drain rate (1,000,000 events, Redis stream -> chDB), the worker's peak RSS
and, with --soak, its RSS growth over a long mixed run. Everything it started is
stopped on exit, Ctrl-C and errors included. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import collections
import http.client
import json
import os
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
KEY = "bench-signing-key-0123456789abcdef0123456789"
STREAM = "beacon:events"
SERVER_CPU = "0"
LOAD_CPU = "1"
UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
# What a product page's pixel asks for; nginx and the floor ignore the query.
PIXEL = "/p.gif?u=https%3A%2F%2Fshop.example%2Fitem%2F4242%3Fcolour%3Dred&r=https%3A%2F%2Fwww.google.com%2F&p.sku=X-4242&p.list=search"
BATCH_EVENTS = 20

# -- targets (what every round measures) ------------------------------------------------


@dataclass
class Row:
    key: str
    label: str
    server: str  # nginx | beacon | floor | granian-beacon | granian-floor
    load: str  # pixel | cookie | post
    env: dict[str, str] = field(default_factory=dict)
    workers: int = 1
    pinned: bool = True
    events: int = 1


ROWS = [
    Row("nginx", "(nginx) empty_gif", "nginx", "pixel"),
    Row("a", "(a) GET /p.gif, returning visitor (valid cookie)", "beacon", "cookie"),
    Row("b", "(b) GET /p.gif, new visitor (Set-Cookie)", "beacon", "pixel"),
    Row("c", f"(c) POST /e, {BATCH_EVENTS} events (text/plain)", "beacon", "post", events=BATCH_EVENTS),
    Row("d", "(d) raw ASGI floor (loadtests/floor.py)", "floor", "pixel"),
    Row("d_limited", "(d) floor through beacon/http.py's protocol (the HTTP limits)", "floor", "pixel", env={"FLOOR_LIMITED": "1"}),
    Row("d_granian", "(d) raw ASGI floor on granian (ASGI)", "granian-floor", "pixel"),
    Row("a_granian", "(a) on granian (ASGI), not `beacon serve`", "granian-beacon", "cookie"),
    Row("a_direct", "(a) group commit off: one XADD per request", "beacon", "cookie", env={"BEACON_GROUP_COMMIT": "false"}),
    Row("a_2w", "(a) 2 workers, wrk unpinned", "beacon", "cookie", workers=2, pinned=False),
]


# -- processes ------------------------------------------------------------------------


class Procs:
    """Every process the benchmark starts; each in its own session so its children go with it."""

    def __init__(self) -> None:
        self.live: list[subprocess.Popen[bytes]] = []

    def start(self, cmd: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.Popen[bytes]:
        with open(log, "ab") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True)
        self.live.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
        if proc in self.live:
            self.live.remove(proc)

    def stop_all(self) -> None:
        for proc in list(reversed(self.live)):
            self.stop(proc, timeout=5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def wait_http(proc: subprocess.Popen[bytes], port: int, path: str, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if get(port, path)[0] == 200:
                return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise RuntimeError(f"server on port {port} did not come up:\n{tail}")
        time.sleep(0.1)


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM of one process, in kB."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1])
    except OSError:
        pass
    return out


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = collections.defaultdict(list)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children[ppid].append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of these processes (all their threads), in seconds."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / os.sysconf("SC_CLK_TCK")


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    kind: str
    workers: int = 1

    def worker_pids(self) -> list[int]:
        """The processes that serve requests: uvicorn's only process, or its spawned workers."""
        if self.kind == "nginx":
            return [p for p in descendants(self.proc.pid) if "worker process" in cmdline(p)]
        if self.kind.startswith("granian"):  # a supervisor and its worker process: count both
            return [self.proc.pid, *descendants(self.proc.pid)]
        if self.workers > 1:
            return [p for p in descendants(self.proc.pid) if "spawn_main" in cmdline(p)]
        return [self.proc.pid]  # taskset execs python: the pid is uvicorn's


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="beacon-bench-"))
        self.procs = Procs()
        self.redis: Any = None
        self.redis_url = ""
        self.cookie = ""
        self.results: dict[str, list[dict[str, float]]] = collections.defaultdict(list)
        self.hwm: dict[str, int] = {}
        self.checked: set[str] = set()
        self.notes: list[str] = []

    # -- setup ----------------------------------------------------------------

    def setup(self) -> None:
        import redis as redis_lib

        from beacon.identity import Identity
        from beacon.redis_server import EmbeddedRedis
        from beacon.scope import Scope

        self.redis = EmbeddedRedis(self.tmp)
        self.redis_url = self.redis.start()
        # Redis stands in for a separate host: keep it off the server's core.
        subprocess.run(["taskset", "-a", "-p", "-c", LOAD_CPU, str(self.redis.proc.pid)], check=True, stdout=subprocess.DEVNULL)
        self.r = redis_lib.Redis.from_url(self.redis_url)
        self.vid = "0b3f4a52-7c1e-4d2a-9a8e-5f6d7c8b9a01"
        self.cookie = Identity(Scope("mall", "bcn"), (KEY,)).sign(self.vid)
        self._scripts()

    def _scripts(self) -> None:
        rnd = random.Random(7)
        events = []
        for i in range(BATCH_EVENTS):
            name = rnd.choice(["view_item", "add_to_cart", "scroll", "click", "pageview"])
            events.append(
                {
                    "e": name,
                    "u": f"https://shop.example/item/{4200 + i}?colour=red",
                    "r": "https://shop.example/search?q=shoes",
                    "p": {"sku": f"X-{4200 + i}", "list": "search", "position": i, "in_stock": True},
                }
            )
        body = json.dumps(events, separators=(",", ":"))
        self.post_body = body.encode()
        (self.tmp / "post.lua").write_text(
            f'wrk.method = "POST"\nwrk.body = [==[{body}]==]\nwrk.headers["Content-Type"] = "text/plain;charset=UTF-8"\n'
        )
        (self.tmp / "mix.lua").write_text(f"""
local n = 0
local returning, new
function init(args)
  returning = wrk.format(nil, nil, {{["User-Agent"] = "{UA}", ["Cookie"] = "bcn={self.cookie}"}})
  new = wrk.format(nil, nil, {{["User-Agent"] = "{UA}"}})
end
function request()
  n = n + 1
  if n % 2 == 0 then return returning end
  return new
end
""")

    # -- servers ----------------------------------------------------------------

    def start(self, row: Row) -> Server:
        port = free_port()
        log = self.tmp / f"{row.server}.log"
        pin = ["taskset", "-c", SERVER_CPU] if row.pinned else []
        if row.server == "nginx":
            prefix = self.tmp / "nginx"
            prefix.mkdir(exist_ok=True)
            conf = prefix / "nginx.conf"
            conf.write_text(f"""
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    server_tokens off;
    keepalive_requests 10000000;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location = /p.gif {{
            empty_gif;
            add_header Cache-Control no-store;
            add_header Cross-Origin-Resource-Policy cross-origin;
        }}
    }}
}}
""")
            cmd = [*pin, "nginx", "-p", f"{prefix}/", "-c", str(conf), "-e", str(prefix / "error.log"), "-g", "daemon off;"]
            proc = self.procs.start(cmd, log)
            server = Server(proc, port, "nginx")
            wait_http(proc, port, "/p.gif", log)
        elif row.server.startswith("granian"):
            # One worker, one runtime thread, uvloop, no access log: the same shape as uvicorn's.
            env = {
                **os.environ,
                **row.env,
                "BEACON_REDIS_URL": self.redis_url,
                "BEACON_SECRET_KEYS": KEY,
                "BEACON_MALL_API_KEY": "x",
                "BEACON_DATA_DIR": str(self.tmp / "beacon"),
                "BEACON_LOG_LEVEL": "warning",
            }
            target = ["--factory", "beacon.app:from_env"] if row.server == "granian-beacon" else ["loadtests.floor:app"]
            cmd = [
                *pin,
                str(Path(PY).parent / "granian"),
                "--interface",
                "asgi",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
                "--runtime-threads",
                "1",
                "--loop",
                "uvloop",
                "--no-ws",
                "--log-level",
                "warning",
                *target,
            ]
            proc = self.procs.start(cmd, log, env=env, cwd=ROOT)
            server = Server(proc, port, row.server)
            wait_http(proc, port, "/healthz" if row.server == "granian-beacon" else "/p.gif", log)
        elif row.server == "floor":
            limited = ["--limited"] if row.env.get("FLOOR_LIMITED") else []
            proc = self.procs.start([*pin, PY, str(ROOT / "loadtests" / "floor.py"), "--port", str(port), *limited], log, cwd=ROOT)
            server = Server(proc, port, "floor")
            wait_http(proc, port, "/p.gif", log)
        else:
            env = {**os.environ, **row.env}
            cmd = [
                *pin,
                PY,
                "-m",
                "beacon",
                "serve",
                "--port",
                str(port),
                "--redis-url",
                self.redis_url,
                "--secret-keys",
                KEY,
                "--mall-api-key",
                "x",
                "--data-dir",
                str(self.tmp / "beacon"),
                "--log-level",
                "warning",
                "--workers",
                str(row.workers),
            ]
            proc = self.procs.start(cmd, log, env=env, cwd=ROOT)
            server = Server(proc, port, "beacon", row.workers)
            wait_http(proc, port, "/healthz", log)
            if row.workers > 1:  # the supervisor answers before every worker is up
                deadline = time.monotonic() + 30
                while len(server.worker_pids()) < row.workers and time.monotonic() < deadline:
                    time.sleep(0.1)
                time.sleep(1.0)
        return server

    def stop(self, server: Server, row: Row) -> None:
        hwm = max((proc_status(p).get("VmHWM", 0) for p in server.worker_pids()), default=0)
        self.hwm[row.key] = max(self.hwm.get(row.key, 0), hwm)
        self.procs.stop(server.proc)
        if row.server in ("beacon", "granian-beacon"):
            self.r.delete(STREAM)

    def check(self, server: Server, row: Row) -> None:
        """Once per row: the response is what the row claims to measure."""
        if row.key in self.checked:
            return
        self.checked.add(row.key)
        if row.load == "post":
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
            conn.request(
                "POST",
                "/e",
                body=self.post_body,
                headers={"Content-Type": "text/plain;charset=UTF-8", "Cookie": f"bcn={self.cookie}", "User-Agent": UA},
            )
            resp = conn.getresponse()
            resp.read()
            conn.close()
            assert resp.status == 204, f"{row.label}: POST /e answered {resp.status}"
            return
        status, headers, body = get(server.port, PIXEL, self.headers(row))
        assert status == 200 and body.startswith(b"GIF89a") and len(body) == 43, f"{row.label}: {status} {body[:20]!r}"
        if row.server in ("beacon", "granian-beacon"):
            if row.load == "cookie":
                assert "set-cookie" not in headers, f"{row.label}: a valid cookie got Set-Cookie"
            else:
                assert headers.get("set-cookie", "").startswith("bcn="), f"{row.label}: no Set-Cookie for a new visitor"

    def headers(self, row: Row) -> dict[str, str]:
        h = {"User-Agent": UA}
        if row.load in ("cookie", "post"):
            h["Cookie"] = f"bcn={self.cookie}"
        return h

    # -- load -----------------------------------------------------------------

    def wrk(
        self,
        port: int,
        duration: float,
        connections: int,
        headers: dict[str, str],
        script: Path | None = None,
        path: str = PIXEL,
        pinned: bool = True,
    ) -> dict[str, float]:
        cmd = ["taskset", "-c", LOAD_CPU] if pinned else []
        cmd += ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency", "--timeout", "5s"]
        for k, v in headers.items():
            cmd += ["-H", f"{k}: {v}"]
        if script is not None:
            cmd += ["-s", str(script)]
        cmd.append(f"http://127.0.0.1:{port}{path}")
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.monotonic()
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
        wall = time.monotonic() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if out.returncode != 0:
            raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr}{out.stdout}")
        res = parse_wrk(out.stdout)
        res["wrk_cpu"] = ((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)) / wall
        return res

    def measure(self, row: Row, server: Server, duration: float) -> dict[str, float]:
        script = self.tmp / "post.lua" if row.load == "post" else None
        path = "/e" if row.load == "post" else PIXEL
        headers = self.headers(row)
        if self.args.warmup > 0:
            self.wrk(server.port, self.args.warmup, self.args.connections, headers, script, path, row.pinned)
            if row.server in ("beacon", "granian-beacon"):
                self.r.delete(STREAM)
        pids = server.worker_pids()
        cpu0, t0 = cpu_seconds(pids), time.monotonic()
        res = self.wrk(server.port, duration, self.args.connections, headers, script, path, row.pinned)
        res["server_cpu"] = (cpu_seconds(pids) - cpu0) / (time.monotonic() - t0)
        return res

    # -- phases -----------------------------------------------------------------

    def rounds(self) -> None:
        granian = (Path(PY).parent / "granian").exists()
        if not granian:
            print("  granian not installed (pip install -e '.[load]'): its rows are skipped", flush=True)
        for n in range(self.args.rounds):
            for row in ROWS:
                if self.args.only and row.key not in self.args.only and row.key != "nginx":
                    continue
                if row.server.startswith("granian") and not granian:
                    continue
                server = self.start(row)
                try:
                    self.check(server, row)
                    res = self.measure(row, server, self.args.duration)
                finally:
                    self.stop(server, row)
                self.results[row.key].append(res)
                bad = f"  ERRORS {res['errors']:.0f}" if res["errors"] else ""
                if res["server_cpu"] < 0.9 * row.workers and row.pinned:
                    bad += "  (server below 90% CPU while saturated: disturbed round)"
                print(
                    f"  round {n + 1}  {row.label:<52} {res['rps']:>10,.0f} req/s  p50 {fmt_ms(res['p50'])}"
                    f"  p99 {fmt_ms(res['p99'])}  server CPU {100 * res['server_cpu']:.0f}%"
                    f"  wrk CPU {100 * res['wrk_cpu']:.0f}%{bad}",
                    flush=True,
                )

    def half_saturation(self) -> dict[str, float] | None:
        if not self.results.get("a"):
            return None
        sat = statistics.median(r["rps"] for r in self.results["a"])
        target = sat / 2
        # wrk's delay() has millisecond resolution: keep its mean >= 10 ms by adding connections.
        # Exponential think times (mean `delay`) make arrivals roughly Poisson; a constant delay
        # would keep the connections in lock step and send them as one burst every `delay` ms.
        conns = max(10, round(target * 10 / 1000))
        delay = max(1, round(conns * 1000 / target))
        script = self.tmp / "half.lua"
        script.write_text(f"""math.randomseed(os.time())
function delay()
  return math.floor(-{delay} * math.log(1 - math.random()) + 0.5)
end
""")
        row = ROWS[1]
        server = self.start(row)
        try:
            if self.args.warmup > 0:
                self.wrk(server.port, self.args.warmup, conns, self.headers(row), script)
            pids = server.worker_pids()
            cpu0, t0 = cpu_seconds(pids), time.monotonic()
            res = self.wrk(server.port, self.args.duration, conns, self.headers(row), script)
            res["server_cpu"] = (cpu_seconds(pids) - cpu0) / (time.monotonic() - t0)
        finally:
            self.stop(server, row)
        res.update(target=target, conns=conns, delay=delay)
        return res

    def profile(self) -> list[str]:
        out_file = Path(self.args.profile)
        row = ROWS[1]
        server = self.start(row)
        try:
            duration = max(5, round(self.args.duration))
            spy = self.procs.start(
                [
                    "taskset",
                    "-c",
                    LOAD_CPU,
                    str(Path(PY).parent / "py-spy"),
                    "record",
                    "-o",
                    str(out_file),
                    "-f",
                    "raw",
                    "-r",
                    "200",
                    "-d",
                    str(duration),
                    "--pid",
                    str(server.worker_pids()[0]),
                ],
                self.tmp / "py-spy.log",
            )
            time.sleep(0.5)
            self.wrk(server.port, duration, self.args.connections, self.headers(row))
            spy.wait(duration + 30)
            self.procs.stop(spy)
        finally:
            self.stop(server, row)
        return summarise_profile(out_file)

    def flusher(self) -> dict[str, Any]:
        n = self.args.flush_events
        stream = "bench:flush"
        t0 = time.monotonic()
        entries = prefill(self.r, stream, n, self.args.flush_entry_lines)
        fill = time.monotonic() - t0
        out = subprocess.run(
            [
                "taskset",
                "-c",
                SERVER_CPU,
                PY,
                __file__,
                "--flusher-child",
                "--redis-url",
                self.redis_url,
                "--ch-dir",
                str(self.tmp / "ch"),
                "--stream",
                stream,
                "--flush-events",
                str(n),
            ],
            capture_output=True,
            text=True,
            timeout=1800,
            cwd=ROOT,
        )
        if out.returncode != 0:
            raise RuntimeError(f"flusher child failed:\n{out.stderr[-3000:]}")
        res = json.loads(out.stdout.strip().splitlines()[-1])
        res.update(entries=entries, fill_seconds=fill)
        self.r.delete(stream)
        return res

    def soak(self, seconds: float) -> dict[str, float]:
        row = ROWS[1]
        server = self.start(row)
        stop = threading.Event()

        def trim() -> None:  # no flusher here: keep Redis from growing without bound
            import redis as redis_lib

            r = redis_lib.Redis.from_url(self.redis_url)
            while not stop.wait(2):
                r.xtrim(STREAM, maxlen=1000, approximate=True)
            r.close()

        trimmer = threading.Thread(target=trim, daemon=True)
        trimmer.start()
        try:
            pid = server.worker_pids()[0]
            warm = min(60.0, max(10.0, seconds / 10))
            self.wrk(server.port, warm, self.args.connections, {}, self.tmp / "mix.lua")
            start = proc_status(pid)
            res = self.wrk(server.port, seconds, self.args.connections, {}, self.tmp / "mix.lua")
            end = proc_status(pid)
        finally:
            stop.set()
            trimmer.join(5)
            self.stop(server, row)
        res.update(warm=warm, rss_start=start.get("VmRSS", 0), rss_end=end.get("VmRSS", 0), hwm_end=end.get("VmHWM", 0))
        res["growth"] = 100.0 * (res["rss_end"] - res["rss_start"]) / max(1, res["rss_start"])
        return res

    def close(self) -> None:
        self.procs.stop_all()
        if self.redis is not None:
            self.redis.stop()
        if self.args.keep:
            print(f"kept {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


# -- helpers ------------------------------------------------------------------------


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        raise ValueError(f"unparsed wrk latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(out: str) -> dict[str, float]:
    res: dict[str, float] = {"errors": 0.0}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m:
        raise RuntimeError(f"wrk printed no rate:\n{out}")
    res["rps"] = float(m.group(1))
    for pct in ("50", "75", "90", "99"):
        m = re.search(rf"^\s+{pct}%\s+(\S+)", out, re.M)
        if m:
            res[f"p{pct}"] = _ms(m.group(1))
    m = re.search(r"(\d+) requests in", out)
    res["requests"] = float(m.group(1)) if m else 0.0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        res["errors"] += float(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        res["errors"] += sum(float(x) for x in m.groups())
    return res


def fmt_ms(v: float) -> str:
    return f"{v:.2f} ms" if v >= 0.1 else f"{v * 1000:.0f} us"


def realistic_lines(n: int, seed: int = 11) -> list[bytes]:
    from beacon.event import encode, uuid7
    from beacon.identity import new_visitor_id

    rnd = random.Random(seed)
    visitors = [new_visitor_id() for _ in range(20_000)]
    uas = [
        UA,
        "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/18.1 Mobile/15E148 Safari/604.1",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.0 Safari/605.1.15",
        "Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0",
    ]
    refs = ["", "https://www.google.com/", "https://shop.example/", "https://shop.example/search?q=shoes", "https://www.instagram.com/"]
    names = ["pageview"] * 6 + ["view_item", "add_to_cart", "scroll", "purchase"]
    t = time.time() - 3600
    out = []
    for i in range(n):
        name = rnd.choice(names)
        item = rnd.randrange(5000)
        props = {} if name == "pageview" else {"sku": f"X-{item}", "list": "search", "position": str(rnd.randrange(40))}
        ts = t + i * 0.003
        out.append(
            encode(
                event_id=uuid7(ts),
                received_at=ts,
                scope="mall",
                visitor_id=rnd.choice(visitors),
                mode="cookie",
                event=name,
                url=f"https://shop.example/item/{item}?colour=red",
                referrer=rnd.choice(refs),
                props=props,
                ip=f"198.51.{rnd.randrange(256)}.0",
                user_agent=rnd.choice(uas),
                transport="pixel" if name == "pageview" else "beacon",
            )
        )
    return out


def prefill(r: Any, stream: str, n: int, per_entry: int) -> int:
    """`n` events as group-committed entries, exactly as beacon.buffer.GroupCommit writes them."""
    r.delete(stream)
    entries = 0
    chunk = 100_000
    for start in range(0, n, chunk):
        lines = realistic_lines(min(chunk, n - start), seed=start)
        pipe = r.pipeline(transaction=False)
        for i in range(0, len(lines), per_entry):
            part = lines[i : i + per_entry]
            pipe.xadd(stream, {"d": b"\n".join(part), "n": len(part)})
            entries += 1
        pipe.execute()
    return entries


def flusher_child(args: argparse.Namespace) -> None:
    """Runs pinned to one core: migrate, then time Flusher.drain() of the pre-filled stream."""
    import redis as redis_lib

    from beacon.flusher import Flusher
    from beacon.store import Store

    store = Store(f"chdb:///{args.ch_dir}", "bench", "events", 395, 1000)
    store.migrate()
    # The twin for chDB's own insert: the same schema (Store.migrate, its materialized view
    # included) in a database of its own. Background merges are stopped while either side is
    # timed: the same parts would be merged after both, and a merge the drain set off must not
    # run inside the other's clock (the child's CPU time counts every engine thread).
    twin = "bench_raw"
    for db in (twin, "bench_warm"):  # the warm-up below goes into the last
        store.database, store.full_table = db, f"{db}.{store.table}"
        store.migrate()
    # Neither side pays the engine's first insert in this process (its code paged in, its
    # caches filled): 10,000 rows into a third copy of the schema before either clock starts.
    store.insert_lines(b"\n".join(realistic_lines(10_000, seed=-1)), "warm-up")
    store.database, store.full_table = "bench", "bench.events"
    store.command("SYSTEM STOP MERGES")
    r = redis_lib.Redis.from_url(args.redis_url)
    flusher = Flusher(r, store, args.stream, "bench", batch_rows=100_000, batch_age=1.0, claim_idle=30)
    # Where the time goes: wrap (not change) the two calls that do the heavy lifting.
    # An XREADGROUP during which an insert ran (on the flusher's insert thread) is a read
    # ahead: counted apart.
    spent = {"insert": 0.0, "xreadgroup": 0.0, "xreadgroup_ahead": 0.0}
    inserts = {"running": 0, "started": 0}

    def timed(name: str, fn: Any) -> Any:
        def call(*a: Any, **kw: Any) -> Any:
            before = (inserts["running"], inserts["started"])
            if name == "insert":
                inserts["running"] += 1
                inserts["started"] += 1
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                if name == "insert":
                    inserts["running"] -= 1
                ahead = name == "xreadgroup" and (before[0] > 0 or inserts["running"] > 0 or inserts["started"] != before[1])
                spent[name + "_ahead" if ahead else name] += time.perf_counter() - t

        return call

    store.insert_lines = timed("insert", store.insert_lines)  # type: ignore[method-assign]
    r.xreadgroup = timed("xreadgroup", r.xreadgroup)  # type: ignore[method-assign]
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    rows = flusher.drain()
    wall = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    count = store.query(f"SELECT count() FROM {store.full_table}")[0][0]
    drain_spent = dict(spent)  # the drain's own; the raw inserts below go through the same wrapper
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    # chDB's own rate for the same bodies: the same generator and seeds as prefill (only the
    # random ids differ), joined into the same 100,000-line bodies, inserted by the same
    # Store.insert_lines into the empty twin; no Redis, no flusher. The bodies are built
    # before the clock starts.
    bodies = [
        b"\n".join(realistic_lines(min(100_000, args.flush_events - start), seed=start)) for start in range(0, args.flush_events, 100_000)
    ]
    store.database, store.full_table = twin, f"{twin}.{store.table}"
    raw0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    for i, body in enumerate(bodies):
        store.insert_lines(body, f"raw-{i}")
    raw_seconds = time.perf_counter() - t0
    raw1 = resource.getrusage(resource.RUSAGE_SELF)
    raw_cpu = (raw1.ru_utime - raw0.ru_utime) + (raw1.ru_stime - raw0.ru_stime)
    raw_count = store.query(f"SELECT count() FROM {store.full_table}")[0][0]
    store.command("SYSTEM START MERGES")
    store.close()
    print(
        json.dumps(
            {
                "rows": rows,
                "seconds": wall,
                "cpu_seconds": cpu,
                "count": count,
                **drain_spent,
                "raw_seconds": raw_seconds,
                "raw_cpu_seconds": raw_cpu,
                "raw_count": raw_count,
                "left_in_stream": r.xlen(args.stream),
            }
        )
    )


def summarise_profile(path: Path, top: int = 15) -> list[str]:
    """py-spy raw (collapsed stacks): the hottest frames by own time and by total time."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        samples += n
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        own[frames[-1]] += n
        for f in set(frames):
            total[f] += n
    out = [f"{samples} samples (active time only; idle epoll waits are not sampled)", "by own time:"]
    out += [f"  {100 * n / samples:5.1f}%  {f}" for f, n in own.most_common(top)]
    out.append("by total time (self + callees):")
    out += [
        f"  {100 * n / samples:5.1f}%  {f}"
        for f, n in total.most_common(top + 10)
        if not f.startswith(("<module>", "run (", "_run_module", "main (", "_run_code"))
    ][:top]
    return out


def source() -> str:
    """Which beacon code the servers ran: `python -m beacon` from ROOT imports ROOT/beacon."""
    where = ROOT / "beacon"
    try:
        rev = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except OSError:
        rev = ""
    return f"{where} ({'git ' + rev if rev else 'not a git checkout'})"


def report(
    b: Bench, half: dict[str, float] | None, flush: dict[str, Any] | None, soak: dict[str, float] | None, prof: list[str] | None
) -> None:
    rounds = b.results.get("nginx", [])
    nginx = [r["rps"] for r in rounds]

    def ratio(key: str, base: list[float]) -> float:
        rows = b.results.get(key, [])
        return statistics.median(r["rps"] / n for r, n in zip(rows, base)) if rows and base else float("nan")

    def cpu_rate(key: str) -> float:
        """Requests per server CPU-second: what a core does when it is the server's alone.
        On a shared, loaded machine this holds where req/s (wall clock) does not."""
        rows = b.results.get(key, [])
        return statistics.median(r["rps"] / max(r["server_cpu"], 1e-9) for r in rows) if rows else float("nan")

    def both(key: str, base: str) -> tuple[float, float]:
        """key/base as (median of per-round req/s ratios, ratio of median req per CPU-second)."""
        return ratio(key, [r["rps"] for r in b.results.get(base, [])]), cpu_rate(key) / cpu_rate(base)

    print()
    print(f"beacon measured: {source()}")
    print(
        f"Beacon benchmark, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores; servers on core {SERVER_CPU}, "
        f"wrk -t1 -c{b.args.connections} on core {LOAD_CPU}; {b.args.rounds} rounds x {b.args.duration:g} s, "
        "medians over rounds"
    )
    print()
    print("| Row | req/s | events/s | p50 | p99 | x nginx (same round) | server CPU | req per server CPU-s | wrk CPU | worker peak RSS |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in ROWS:
        res = b.results.get(row.key)
        if not res:
            continue
        rps = statistics.median(r["rps"] for r in res)
        p50 = statistics.median(r["p50"] for r in res)
        p99 = statistics.median(r["p99"] for r in res)
        errs = sum(r["errors"] for r in res)
        err = f" ({errs:.0f} errors)" if errs else ""
        rss = f"{b.hwm.get(row.key, 0) / 1024:.1f} MB" if b.hwm.get(row.key) else "-"
        scpu = statistics.median(r["server_cpu"] for r in res)
        wcpu = statistics.median(r["wrk_cpu"] for r in res)
        per_cpu = statistics.median(r["rps"] / max(r["server_cpu"], 1e-9) for r in res)
        print(
            f"| {row.label}{err} | {rps:,.0f} | {rps * row.events:,.0f} | {fmt_ms(p50)} | {fmt_ms(p99)} | "
            f"{ratio(row.key, nginx):.3f} | {100 * scpu:.0f}% | {per_cpu:,.0f} | {100 * wcpu:.0f}% | {rss} |"
        )
    if half:
        print(
            f"| (a) at ~half saturation ({half['conns']:.0f} conns, mean delay {half['delay']:.0f} ms, "
            f"target {half['target']:,.0f}/s) | {half['rps']:,.0f} | {half['rps']:,.0f} | {fmt_ms(half['p50'])} | "
            f"{fmt_ms(half['p99'])} | - | {100 * half['server_cpu']:.0f}% | - | {100 * half['wrk_cpu']:.0f}% | - |"
        )
    print()
    print("ratios: by req/s (median of per-round ratios) | by requests per server CPU-second (holds on a loaded machine)")
    for key, base, what in (
        ("a", "d", "(a)/(d): returning visitor / raw ASGI floor, uvicorn"),
        ("d_limited", "d", "floor with Beacon's HTTP limits / floor"),
        ("a", "d_limited", "(a) / floor with Beacon's HTTP limits (Beacon's app work alone)"),
        ("b", "a", "(b)/(a): new visitor / returning visitor"),
        ("d_granian", "d", "floor on granian / floor on uvicorn"),
        ("a_granian", "a", "(a) on granian / (a) on uvicorn"),
        ("a_granian", "d_granian", "(a)/(d) on granian"),
    ):
        if b.results.get(key) and b.results.get(base):
            wall, cpu = both(key, base)
            print(f"  {what}: {100 * wall:.1f}% | {100 * cpu:.1f}%")
    if b.results.get("a") and b.results.get("d"):
        if b.results.get("a_direct"):
            gc = [r["rps"] for r in b.results["a"]]
            print(f"one XADD per request / group commit: {100 * ratio('a_direct', gc):.1f}%")
    if flush:
        rate = flush["rows"] / flush["seconds"]
        print(
            f"flusher: {flush['rows']:,} events ({flush['entries']:,} entries) drained in {flush['seconds']:.2f} s "
            f"on one core = {rate:,.0f} events/s ({flush['rows'] / max(flush['cpu_seconds'], 1e-9):,.0f} per "
            f"flusher CPU-second); ClickHouse count() = {flush['count']:,}; left in stream: "
            f"{flush['left_in_stream']}"
        )
        print(
            f"  of which ClickHouse raw insert {flush['insert']:.2f} s, XREADGROUP {flush['xreadgroup']:.2f} s "
            f"(and {flush.get('xreadgroup_ahead', 0):.2f} s read ahead during inserts), the rest (manifest, "
            f"XACK/XDEL, waiting for a read ahead) {flush['seconds'] - flush['insert'] - flush['xreadgroup']:.2f} s"
        )
        raw = flush["rows"] / flush["raw_seconds"]
        fcpu = flush["rows"] / max(flush["cpu_seconds"], 1e-9)
        rcpu = flush["raw_count"] / max(flush["raw_cpu_seconds"], 1e-9)
        print(
            f"  side by side, one core: flusher {rate:,.0f} events/s ({fcpu:,.0f} per CPU-second) | chDB's own "
            f"insert of the same bodies (same Store.insert_lines, same 100,000-line inserts, no Redis) "
            f"{raw:,.0f} events/s ({rcpu:,.0f} per CPU-second) -> {100 * rate / raw:.1f}% by wall clock, "
            f"{100 * fcpu / rcpu:.1f}% per CPU-second"
        )
        if b.results.get("a"):
            web = cpu_rate("a")
            cores = flush["rows"] / max(flush["cpu_seconds"], 1e-9) / web
            print(
                f"  one flusher core keeps up with {cores:.1f} web cores serving (a) ({web:,.0f} events per web "
                f"CPU-second vs {flush['rows'] / max(flush['cpu_seconds'], 1e-9):,.0f} per flusher CPU-second)"
            )
    if soak:
        print(
            f"soak: {soak['rps']:,.0f} req/s for {b.args.soak:g} s (50% (a), 50% (b), after {soak['warm']:.0f} s "
            f"warm-up): worker RSS {soak['rss_start'] / 1024:.1f} MB -> {soak['rss_end'] / 1024:.1f} MB "
            f"({soak['growth']:+.1f}%), VmHWM {soak['hwm_end'] / 1024:.1f} MB, p99 {fmt_ms(soak['p99'])}"
            + (f", ERRORS {soak['errors']:.0f}" if soak["errors"] else "")
        )
    print()
    print("targets:")

    def verdict(ok: bool) -> str:
        return "holds" if ok else "MISSED"

    if nginx:
        if b.results.get("a"):
            a = ratio("a", nginx)
            print(f"  (a) >= 0.20x nginx: {a:.3f} -> {verdict(a >= 0.20)}")
        if b.results.get("b"):
            bb = ratio("b", nginx)
            print(f"  (b) >= 0.15x nginx: {bb:.3f} -> {verdict(bb >= 0.15)}")
    if b.results.get("a") and b.results.get("d"):
        wall, cpu = both("a", "d")
        print(
            f"  (a) >= 65% of (d) on uvicorn: {100 * wall:.1f}% by req/s -> {verdict(wall >= 0.65)}; "
            f"{100 * cpu:.1f}% per CPU-second -> {verdict(cpu >= 0.65)}"
        )
    if b.results.get("a") and b.results.get("b"):
        wall, cpu = both("b", "a")
        print(
            f"  (b) within 10% of (a): {100 * wall:.1f}% by req/s -> {verdict(wall >= 0.90)}; "
            f"{100 * cpu:.1f}% per CPU-second -> {verdict(cpu >= 0.90)}"
        )
    if half:
        print(f"  p99 <= 5 ms at half saturation: {fmt_ms(half['p99'])} -> {verdict(half['p99'] <= 5)}")
    if flush:
        rate = flush["rows"] / flush["seconds"]
        print(f"  flusher >= 1M events/s per core: {rate:,.0f} -> {verdict(rate >= 1e6)}")
        share = rate / (flush["rows"] / flush["raw_seconds"])
        cpu_share = (flush["rows"] / max(flush["cpu_seconds"], 1e-9)) / (flush["raw_count"] / max(flush["raw_cpu_seconds"], 1e-9))
        print(
            f"  flusher >= 90% of chDB's own insert of the same bodies: {100 * share:.1f}% by wall clock -> "
            f"{verdict(share >= 0.9)}; {100 * cpu_share:.1f}% per CPU-second -> {verdict(cpu_share >= 0.9)}"
        )
        print(f"  flusher lands every event: count() {flush['count']:,} -> {verdict(flush['count'] == b.args.flush_events)}")
    if soak:
        print(f"  RSS growth <= 10% over the soak: {soak['growth']:+.1f}% -> {verdict(soak['growth'] <= 10)}")
    if prof:
        print()
        print(f"py-spy profile of (a) ({b.args.profile}):")
        for line in prof:
            print("  " + line)


def main() -> int:
    p = argparse.ArgumentParser(description="Beacon vs nginx empty_gif, pinned, ratios per round.")
    p.add_argument("--duration", type=float, default=10, help="seconds of each measured wrk run")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=float, default=2, help="seconds of wrk before each measured run")
    p.add_argument("--connections", type=int, default=64, help="wrk -c for the saturation rows")
    p.add_argument("--soak", type=float, default=0, help="seconds of the RSS soak run (0: skip)")
    p.add_argument("--skip-flusher", action="store_true")
    p.add_argument("--flush-events", type=int, default=1_000_000)
    p.add_argument("--flush-entry-lines", type=int, default=1000, help="events per stream entry (group commit)")
    p.add_argument("--profile", default="", help="write a py-spy raw profile of (a) here and summarise it")
    p.add_argument("--only", nargs="*", default=[], help="row keys to run (nginx always runs): " + " ".join(r.key for r in ROWS))
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, configs)")
    p.add_argument("--flusher-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--redis-url", help=argparse.SUPPRESS)
    p.add_argument("--ch-dir", help=argparse.SUPPRESS)
    p.add_argument("--stream", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.flusher_child:
        flusher_child(args)
        return 0
    for tool in ("wrk", "nginx", "taskset", "redis-server"):
        if shutil.which(tool) is None and not (tool == "nginx" and Path("/usr/sbin/nginx").exists()):
            print(f"bench: {tool} not found", file=sys.stderr)
            return 2
    if os.cpu_count() is None or os.cpu_count() < 2:
        print("bench: needs 2 cores (server on core 0, wrk on core 1)", file=sys.stderr)
        return 2
    os.environ["PATH"] += ":/usr/sbin"

    def on_term(*_: Any) -> None:
        raise KeyboardInterrupt

    # Explicit for SIGINT too: a shell starts background jobs with SIGINT ignored.
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    b = Bench(args)
    half = flush = soak = None
    prof = None
    try:
        b.setup()
        print(f"rows: {args.rounds} rounds x {len(ROWS)} targets, {args.duration:g} s each (+{args.warmup:g} s warm-up)", flush=True)
        b.rounds()
        if not args.only or "a" in args.only:
            half = b.half_saturation()
            if half:
                print(f"  half saturation: {half['rps']:,.0f} req/s (target {half['target']:,.0f}), p99 {fmt_ms(half['p99'])}", flush=True)
        if args.profile:
            prof = b.profile()
        if not args.skip_flusher:
            print(f"flusher: pre-filling {args.flush_events:,} events ...", flush=True)
            flush = b.flusher()
        if args.soak > 0:
            print(f"soak: {args.soak:g} s ...", flush=True)
            soak = b.soak(args.soak)
        report(b, half, flush, soak, prof)
    except KeyboardInterrupt:
        print("\nbench: interrupted, cleaning up", file=sys.stderr)
        return 130
    finally:
        b.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
