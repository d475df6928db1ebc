"""Shared plumbing of the benchmarks: machine facts, vhosts, processes, bodies, stats, results.

Every benchmark runs against the machine's real RabbitMQ (127.0.0.1:5672, guest/guest) in a
virtual host of its own, and writes its section of docs/performance.md between markers.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import hashlib
import hmac
import json
import os
import platform
import re
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aio_pika  # noqa: E402
import aiohttp  # noqa: E402

from tests.support.daemon import SECRETS, cli_env, free_port, write_config  # noqa: E402
from tests.support.rabbit import create_vhost, delete_vhost  # noqa: E402

PY = sys.executable
BENCH = ROOT / "bench"
RESULTS = ROOT / "docs" / "performance.md"
SECRET = SECRETS["consumer_secret"]
BOT = "1230981029831098231"
BOT_ID = "aaaabbbb-4444-5555-6666-ccccddddeeee"
SIGNATURE_HEADER = "x-twitter-webhooks-signature"
BODY_BYTES = 1024


# -- machine ----------------------------------------------------------------------------


def machine() -> str:
    """One line: cores, RAM, CPU model, Python, RabbitMQ, aiohttp/aio-pika versions."""
    mem_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "?",
    )
    return (
        f"{os.cpu_count()} cores ({cpu}), {mem_kb / 1024 / 1024:.0f} GiB RAM, "
        f"Linux {platform.release()}, Python {platform.python_version()}, "
        f"RabbitMQ {rabbit_version()}, aiohttp {aiohttp.__version__}, "
        f"aio-pika {aio_pika.__version__}"
    )


def rabbit_version() -> str:
    try:
        out = subprocess.run(
            ["rabbitmqctl", "version"], capture_output=True, text=True, timeout=30, check=True
        )
        return out.stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def command_line() -> str:
    return " ".join(
        [".venv/bin/python", *map(shlex.quote, [os.path.relpath(sys.argv[0], ROOT)])]
        + [shlex.quote(a) for a in sys.argv[1:]]
    )


def now_utc() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


# -- results ----------------------------------------------------------------------------

HEADER = """# Performance

Measured numbers, with the commands that reproduce them (`make bench` runs them all; see
[bench/README.md](../bench/README.md)). Each section below is rewritten by its own benchmark;
it says the machine, the command and the date it was produced with. Everything runs on one
machine: the daemon, RabbitMQ, the load generator and the stand-ins share its cores, so the
numbers are a floor for a real deployment, and they compare like with like within a section.
Each section quotes the load average it started with: other work on the machine shows there.
"""


def write_section(name: str, title: str, body: str) -> None:
    """Replace (or append) the section ``name`` of docs/performance.md."""
    start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
    block = (
        f"{start}\n## {title}\n\n"
        f"- machine: {machine()}\n- command: `{command_line()}`\n- date: {now_utc()}\n\n"
        f"{body.strip()}\n{end}"
    )
    RESULTS.parent.mkdir(exist_ok=True)
    text = RESULTS.read_text() if RESULTS.exists() else HEADER
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    text = (
        pattern.sub(lambda _m: block, text)
        if pattern.search(text)
        else f"{text.rstrip()}\n\n{block}\n"
    )
    RESULTS.write_text(text if text.endswith("\n") else text + "\n")
    print(f"\nwrote section '{name}' of {RESULTS.relative_to(ROOT)}")


# -- stats ------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def median_spread(values: Sequence[float]) -> tuple[float, float, float]:
    """(median, min, max) of several runs."""
    return statistics.median(values), min(values), max(values)


def fmt_runs(values: Sequence[float], unit: str = "", digits: int = 1) -> str:
    """'median (min-max, n runs)'."""
    if not values:
        return "n/a"
    med, lo, hi = median_spread(values)
    if len(values) == 1:
        return f"{med:.{digits}f}{unit} (1 run)"
    return f"{med:.{digits}f}{unit} ({lo:.{digits}f}-{hi:.{digits}f}, {len(values)} runs)"


# -- deliveries -------------------------------------------------------------------------


def sign(raw: bytes, secret: str = SECRET) -> str:
    return (
        "sha256="
        + base64.b64encode(hmac.new(secret.encode(), raw, hashlib.sha256).digest()).decode()
    )


def delivery(event_id: str, user_id: str, text: str, bot: str = BOT) -> dict[str, Any]:
    """An AAA delivery of one DM from ``user_id`` to ``bot`` (the shape X sends)."""
    return {
        "for_user_id": bot,
        "direct_message_events": [
            {
                "type": "message_create",
                "id": event_id,
                "created_timestamp": str(int(time.time() * 1000)),
                "message_create": {
                    "target": {"recipient_id": bot},
                    "sender_id": user_id,
                    "message_data": {"text": text, "entities": {"urls": []}},
                },
            }
        ],
        "users": {
            user_id: {"id": user_id, "name": "Jordan Brinks", "screen_name": "furiouscamper"},
            bot: {"id": bot, "name": "Demo bot", "screen_name": "demobot"},
        },
    }


def signed_body(event_id: str, user_id: str, tag: str = "") -> tuple[bytes, str]:
    """A ~1 KB signed delivery: (raw body, signature header value)."""
    text = f"{tag}{event_id} "
    raw = json.dumps(delivery(event_id, user_id, text), separators=(",", ":")).encode()
    pad = max(0, BODY_BYTES - len(raw))
    raw = json.dumps(delivery(event_id, user_id, text + "x" * pad), separators=(",", ":")).encode()
    return raw, sign(raw)


def user_for(index: int, users: int = 1000) -> str:
    return str(700_000_000 + index % users)


def write_body_file(path: Path, count: int, first_id: int, users: int = 1000) -> Path:
    """``count`` pre-signed bodies, one per line as 'signature<TAB>body', distinct event ids."""
    with path.open("wb") as out:
        for i in range(count):
            raw, sig = signed_body(str(first_id + i), user_for(i, users))
            out.write(sig.encode() + b"\t" + raw + b"\n")
    return path


# -- processes --------------------------------------------------------------------------


@dataclass
class Proc:
    """A child process whose output goes to a log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    port: int | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def rss_kb(self) -> int:
        return _status_kb(self.pid, "VmRSS")

    def hwm_kb(self) -> int:
        return _status_kb(self.pid, "VmHWM")

    def stop(self, timeout: float = 15.0) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()

    def tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""


def _status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def spawn(name: str, argv: list[str], workdir: Path, env: dict[str, str] | None = None) -> Proc:
    log = workdir / f"{name}.log"
    handle = log.open("wb")
    popen = subprocess.Popen(
        argv, stdout=handle, stderr=subprocess.STDOUT, env=env or cli_env(), cwd=ROOT
    )
    handle.close()
    return Proc(name, popen, log)


def wait_http(url: str, proc: Proc, timeout: float = 30.0, status: int = 200) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited:\n{proc.tail()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == status:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{proc.name} not ready at {url}:\n{proc.tail()}")


def http_json(url: str, data: bytes | None = None) -> Any:
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def http_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read().decode()


@contextlib.contextmanager
def vhost() -> Iterator[str]:
    name = create_vhost()
    try:
        yield name
    finally:
        with contextlib.suppress(Exception):
            delete_vhost(name)


@contextlib.contextmanager
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="twitter-bot-bench-") as path:
        yield Path(path)


@dataclass
class Stubs:
    """bench/stubs.py in its own process: instant (or slow) X and gateway stand-ins."""

    proc: Proc
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reset(self) -> None:
        http_json(self.url + "/_reset", b"")

    def dms(self) -> list[tuple[str, float]]:
        """(text, epoch seconds) of every DM the X stand-in accepted since the last reset."""
        return [(t, at) for t, at in http_json(self.url + "/_dms")]

    def count(self) -> int:
        return int(http_json(self.url + "/_count")["dms"])


def start_stubs(where: Path, gateway_delay: float = 0.0) -> Stubs:
    port = free_port()
    proc = spawn(
        "stubs",
        [PY, str(BENCH / "stubs.py"), "--port", str(port), "--gateway-delay", str(gateway_delay)],
        where,
    )
    wait_http(f"http://127.0.0.1:{port}/_count", proc)
    return Stubs(proc, port)


@dataclass
class Daemon:
    proc: Proc
    port: int
    config: Path
    role: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def metrics(self) -> str:
        return http_text(self.url + "/metrics")


def start_daemon(
    where: Path, vhost_name: str, role: str, stubs: Stubs | None, extra: str = ""
) -> Daemon:
    """The real ``twitter-bot run`` with the reference config shape, logging JSON at info."""
    port = free_port()
    stub_conf = ""
    if stubs is not None:
        stub_conf = f"""
chatbots.twitter-bot.api.twitter-url: "{stubs.url}/"
chatbots.twitter-bot.api.upload-url: "{stubs.url}/1.1/"
chatbots.gateway-api.url: "{stubs.url}"
"""
    config = write_config(
        where / f"daemon-{role}-{port}.conf",
        vhost=vhost_name,
        queue_prefix=f"bench-{port}",
        http_port=port,
        extra=stub_conf + "chatbots.twitter-bot.logging.level: info\n" + extra,
    )
    argv = [PY, "-m", "twitter_bot", "run", "--role", role, "--config", str(config)]
    proc = spawn(f"daemon-{role}-{port}", argv, where)
    wait_http(f"http://127.0.0.1:{port}/health/ready", proc)
    return Daemon(proc, port, config, role)


def metric_value(text: str, name: str, labels: str = "") -> float:
    """The value of one sample of a Prometheus text exposition (0 when absent)."""
    wanted = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(wanted + " "):
            return float(line.split()[-1])
    return 0.0


def histogram_buckets(text: str, name: str) -> list[tuple[float, float]]:
    """(upper bound, cumulative count) of each bucket of a Prometheus histogram, in order."""
    buckets: list[tuple[float, float]] = []
    for line in text.splitlines():
        if line.startswith(f"{name}_bucket{{"):
            le = line.split('le="')[1].split('"')[0]
            buckets.append((float("inf") if le == "+Inf" else float(le), float(line.split()[-1])))
    return buckets


def histogram_over(text: str, name: str, bound: float) -> float:
    """How many observations of a Prometheus histogram exceeded ``bound`` (a bucket bound)."""
    buckets = histogram_buckets(text, name)
    within = [count for upper, count in buckets if abs(upper - bound) < 1e-9]
    if not within:
        raise ValueError(f"{bound} is not a bucket bound of {name}")
    return buckets[-1][1] - within[0]


def histogram_quantile(text: str, name: str, q: float) -> float:
    """Bucket upper bound holding quantile q (0..1) of a Prometheus histogram."""
    buckets = histogram_buckets(text, name)
    if not buckets or buckets[-1][1] == 0:
        return float("nan")
    total = buckets[-1][1]
    for bound, count in buckets:
        if count >= q * total:
            return bound
    return float("inf")


def run_loadgen(
    where: Path,
    url: str,
    *,
    rate: float,
    duration: float,
    first_id: int,
    users: int = 1000,
    concurrency: int = 256,
    tag: str = "",
) -> dict[str, Any]:
    """bench/loadgen.py in its own process: open-loop, fixed rate; returns its JSON summary."""
    out = where / f"loadgen-{first_id}.json"
    argv = [
        PY,
        str(BENCH / "loadgen.py"),
        "--url",
        url,
        "--rate",
        str(rate),
        "--duration",
        str(duration),
        "--first-id",
        str(first_id),
        "--users",
        str(users),
        "--concurrency",
        str(concurrency),
        "--out",
        str(out),
        "--tag",
        tag,
    ]
    subprocess.run(argv, check=True, cwd=ROOT, timeout=duration * 3 + 120)
    return dict(json.loads(out.read_text()))


def socket_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


@dataclass
class Deployment:
    """The daemon as one process (``all``) or split (a ``webhook`` and a ``worker`` process)."""

    layout: str
    daemons: list[Daemon]

    @property
    def webhook_url(self) -> str:
        return self.daemons[0].url + "/webhooks"

    def stop(self) -> None:
        for daemon in self.daemons:
            daemon.proc.stop()

    def rss_kb(self) -> int:
        return sum(d.proc.rss_kb() for d in self.daemons)


def start_deployment(
    where: Path, vhost_name: str, layout: str, stubs: Stubs, extra: str = ""
) -> Deployment:
    """``all``: one daemon; ``split``: a webhook and a worker on the same queues;
    ``webhook``: a webhook alone (nothing consumes: the queues fill)."""
    if layout in ("all", "webhook"):
        return Deployment(layout, [start_daemon(where, vhost_name, layout, stubs, extra)])
    webhook = start_daemon(where, vhost_name, "webhook", stubs, extra)
    port = free_port()
    text = webhook.config.read_text().replace(f"port: {webhook.port}", f"port: {port}")
    config = where / f"worker-{port}.conf"
    config.write_text(text)
    argv = [PY, "-m", "twitter_bot", "run", "--role", "worker", "--config", str(config)]
    proc = spawn(f"daemon-worker-{port}", argv, where)
    wait_http(f"http://127.0.0.1:{port}/health/ready", proc)
    return Deployment(layout, [webhook, Daemon(proc, port, config, "worker")])


def load_deployment(
    where: Path,
    layout: str,
    stubs: Stubs,
    *,
    rate: float,
    duration: float,
    first_id: int,
    concurrency: int = 256,
) -> dict[str, Any]:
    """Start ``layout`` on a fresh vhost, run the load generator against it, stop it."""
    with vhost() as vhost_name:
        deployment = start_deployment(where, vhost_name, layout, stubs)
        try:
            summary = run_loadgen(
                where,
                deployment.webhook_url,
                rate=rate,
                duration=duration,
                first_id=first_id,
                concurrency=concurrency,
            )
            # The process answering X: its confirm waits and event-loop lag explain a tail.
            summary["webhook_metrics"] = deployment.daemons[0].metrics()
            return summary
        finally:
            deployment.stop()


def fixed_rate_arguments(
    duration: float, rate: float, parser: argparse.ArgumentParser | None = None
) -> argparse.Namespace:
    """``--runs``, ``--duration``, ``--rate`` and ``--quick`` (1 run of 5 s), parsed.

    Pass a ``parser`` to add a benchmark's own options first.
    """
    parser = parser or argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=duration)
    parser.add_argument("--rate", type=float, default=rate)
    parser.add_argument("--quick", action="store_true", help="1 run of 5 s")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.duration = 1, 5.0
    return args


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def latency_row(label: str, runs: list[dict[str, Any]]) -> str:
    """A table row: p50/p99/max of the 200s (ms, median of runs with spread) and non-200s."""
    cells = []
    for q in (50, 99, 100):
        values = [percentile(r["ok_latencies_ms"], q) for r in runs if r["ok_latencies_ms"]]
        cells.append(fmt_runs(values, " ms"))
    bad = sum(sum(v for k, v in r["statuses"].items() if k != "200") for r in runs)
    sent = sum(r["sent"] for r in runs)
    return f"| {label} | {' | '.join(cells)} | {bad} of {sent} |"
