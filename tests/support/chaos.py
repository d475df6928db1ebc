"""Chaos runs: many conversations through real daemon processes while faults are injected.

The harness process serves FakeX and FakeGateway, runs a TcpProxy between the daemons and
RabbitMQ, starts two ``--role all`` daemon processes and plays X: each conversation's DMs are
delivered one after another (the next only once the previous got its 200), each to a random
instance, and redelivered (same event id) after any non-200 or timeout, as X does. Faults, in
any combination: SIGKILL an instance at random moments (restarted at once), cut the broker link
and restore it, the gateway answering 503 for a window, X answering 429 to one bot's DMs for a
window (with ``x-rate-limit-reset`` at the window's end).

The outcome counts, for every message that got a 200: its replies delivered, lost, duplicated,
out of order within the conversation, and what sits in the dead-letter queue.
Used by bench/chaos.py (10,000 messages) and tests/chaos/test_chaos_short.py (CI).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.fakes.fake_gateway import FakeGateway, RecordedRequest, ScriptedResponse
from tests.fakes.fake_x import DM_KINDS, FakeX, XCall, v11_error
from tests.support.daemon import SECRETS, DaemonProcess, free_port, write_config
from tests.support.deliveries import aaa_delivery, dm_event, echo_delivery, signed
from tests.support.rabbit import RABBIT_HOST, RABBIT_PORT
from tests.support.tcp_proxy import TcpProxy

BOTS = (
    ("1230981029831098231", "bot-a", SECRETS["bot_token"], SECRETS["bot_secret"]),
    ("4337869213", "bot-b", "4337869213-chaos-bot-b-Ln4Qw8Zr", "chaos-bot-b-secret-Mp2Vx7Hs"),
)
PARTS = ("a", "b")  # every message is answered with two replies


@dataclass
class Faults:
    """What to break, when (seconds after the start of the load)."""

    kills: int = 0
    kill_window: tuple[float, float] = (2.0, 60.0)
    broker_cuts: tuple[tuple[float, float], ...] = ()  # (at, seconds)
    gateway_503: tuple[float, float] | None = None  # (at, seconds)
    x_429: tuple[float, float] | None = None  # (at, seconds), for the second bot only


@dataclass
class ChaosPlan:
    name: str
    messages: int = 10_000
    conversations: int = 50
    rate: float = 200.0  # deliveries offered per second, over all conversations
    instances: int = 2
    faults: Faults = field(default_factory=Faults)
    drain_timeout: float = 600.0
    seed: int = 1
    extra_config: str = ""
    # X delivers each DM a bot sends back to the webhook (x-api.md), here to a random
    # instance, up to 4 tries; the daemons drop them if resend-echo-wait is 0.
    echoes: bool = True
    # Where to write each daemon process's log (one file per process), if anywhere.
    logs_to: Path | None = None


@dataclass
class ChaosResult:
    name: str
    messages: int
    accepted: int = 0
    posts: int = 0
    non_200: int = 0
    replies_expected: int = 0
    replies_delivered: int = 0  # distinct replies X accepted
    lost: int = 0
    duplicated: int = 0  # extra copies of a reply
    # Of those, copies sent after a later reply of the conversation (the user sees them out
    # of place even though every first copy came in order).
    late_duplicates: int = 0
    out_of_order: int = 0
    unexpected: int = 0
    dead_lettered: int = 0
    drain_seconds: float | None = None
    kills: int = 0
    cuts: int = 0
    gateway_calls: int = 0
    elapsed: float = 0.0
    # Diagnosis of the duplicates: by what happened to their message.
    dup_causes: dict[str, int] = field(default_factory=dict)
    # Warning and error events the daemons logged, by event name.
    daemon_events: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    echoes_sent: int = 0  # X's echoes of the bots' DMs that got a 200
    echoes_given_up: int = 0  # echoes not accepted in 4 tries


class ChaosHarness:
    def __init__(self, plan: ChaosPlan, vhost: str, workdir: Path) -> None:
        self.plan = plan
        self.vhost = vhost
        self.workdir = workdir
        self.rng = random.Random(plan.seed)
        self.prefix = f"chaos-{uuid.uuid4().hex[:8]}"
        self.x = FakeX(
            consumer_key="proc-app-key",
            consumer_secret=SECRETS["consumer_secret"],
            rate_limit=10**9,
        )
        for user_id, _bot_id, token, secret in BOTS:
            self.x.add_user(user_id, token=token, secret=secret)
        self.gateway = FakeGateway()
        self.proxy = TcpProxy(RABBIT_HOST, RABBIT_PORT)
        self.servers: list[TestServer] = []
        self.daemons: list[DaemonProcess | None] = []
        self.configs: list[tuple[Path, int]] = []
        self.accepted_order: dict[int, list[int]] = defaultdict(list)
        self.result = ChaosResult(plan.name, plan.messages)
        self.t0 = 0.0
        self._gateway_down_until = 0.0
        self._gateway_down_from = math.inf
        self._x_down: tuple[float, float] = (math.inf, 0.0)
        self._restarting: set[int] = set()
        self._broker_down = False
        self.kill_times: list[float] = []  # epoch seconds
        self.cut_times: list[float] = []
        self.all_daemons: list[DaemonProcess] = []  # every process started, for its logs
        self.redelivered: set[str] = set()  # "c{c}m{k}" whose first POST was not a 200
        self._http: aiohttp.ClientSession | None = None
        self._echo_tasks: set[asyncio.Task[None]] = set()

    # -- set-up -------------------------------------------------------------------------

    async def start(self) -> None:
        await self.proxy.start()
        x_app = self.x.make_app()
        x_app.middlewares.append(self._x_429_middleware)
        x_server = TestServer(x_app)
        gateway_server = TestServer(self.gateway.app)
        for server in (x_server, gateway_server):
            await server.start_server()
            self.servers.append(server)
        for _user_id, bot_id, *_ in BOTS:
            self.gateway.on_message(bot_id, self._answer)
        api_url, upload_url = FakeX.urls(x_server.make_url("/"))
        bots = ", ".join(
            f'{{access-token: "{token}", access-secret: "{secret}", user-id: {user_id}, '
            f'bot-id: "{bot_id}"}}'
            for user_id, bot_id, token, secret in BOTS
        )
        for index in range(self.plan.instances):
            port = free_port()
            config = write_config(
                self.workdir / f"chaos-{index}.conf",
                vhost=self.vhost,
                queue_prefix=self.prefix,
                http_port=port,
                rabbit_port=self.proxy.port,
                extra=f"""
chatbots.twitter-bot.bots: [{bots}]
chatbots.twitter-bot.api.twitter-url: "{api_url}"
chatbots.twitter-bot.api.upload-url: "{upload_url}"
chatbots.gateway-api.url: "{str(gateway_server.make_url("/")).rstrip("/")}"
chatbots.twitter-bot.webhooks-messaging {{ mark-read: false, typing-indicator: false }}
chatbots.messaging.rabbit {{ connect-timeout: 2s, heartbeat: 10 }}
chatbots.twitter-bot.logging.level: warning
{self.plan.extra_config}
""",
            )
            self.configs.append((config, port))
            daemon = await DaemonProcess.start(config, port)
            self.all_daemons.append(daemon)
            await daemon.wait_ready(timeout=30)
            self.daemons.append(daemon)

    async def stop(self) -> None:
        for daemon in self.daemons:
            if daemon is not None:
                with contextlib.suppress(Exception):
                    await daemon.kill()
        if self.plan.logs_to is not None:
            self.plan.logs_to.mkdir(parents=True, exist_ok=True)
            for n, daemon in enumerate(self.all_daemons):
                (self.plan.logs_to / f"daemon-{n:02d}.log").write_text("".join(daemon.logs))
        await self.proxy.stop()
        for server in self.servers:
            await server.close()

    # -- the stand-ins' behaviour ---------------------------------------------------------

    def _now(self) -> float:
        return time.monotonic() - self.t0

    async def _answer(self, request: RecordedRequest) -> Any:
        now = self._now()
        if self._gateway_down_from <= now < self._gateway_down_until:
            return ScriptedResponse(503, {"error": "chaos: gateway down"})
        text = request.body["text"]
        return [{"type": "text", "text": f"{text}/{part}"} for part in PARTS]

    @web.middleware
    async def _x_429_middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        start, end = self._x_down
        token = BOTS[1][2]
        if (
            start <= self._now() < end
            and request.path.endswith("/direct_messages/events/new.json")
            and f'oauth_token="{token}"' in request.headers.get("Authorization", "")
        ):
            await request.read()
            reset = math.ceil(time.time() + (end - self._now()))
            return web.json_response(
                v11_error(88, "Rate limit exceeded"),
                status=429,
                headers={"x-rate-limit-remaining": "0", "x-rate-limit-reset": str(reset)},
            )
        response: web.StreamResponse = await handler(request)
        return response

    # -- the load -----------------------------------------------------------------------

    def _conversation(self, c: int) -> tuple[str, str]:
        """(bot user id, user id) of conversation c."""
        return BOTS[c % len(BOTS)][0], str(800_000_000 + c)

    def _event_id(self, c: int, k: int) -> str:
        return f"{7_000_000_000 + c * 100_000 + k}"

    async def _conversation_sender(self, http: aiohttp.ClientSession, c: int, count: int) -> None:
        bot, user = self._conversation(c)
        per_second = self.plan.rate / self.plan.conversations
        for k in range(count):
            due = k / per_second
            if (wait := due - self._now()) > 0:
                await asyncio.sleep(wait)
            body = aaa_delivery(bot, dm_event(self._event_id(c, k), user, bot, f"c{c}m{k}"))
            raw, headers = signed(body, SECRETS["consumer_secret"])
            if await self._deliver_until_accepted(http, raw, headers):
                self.redelivered.add(f"c{c}m{k}")
            self.accepted_order[c].append(k)
            self.result.accepted += 1
            self.last_accept = self._now()

    def _echo_dm(self, call: XCall) -> None:
        """FakeX took a DM: post X's echo of it to the webhook, as X does."""
        if call.kind not in DM_KINDS or self._http is None or call.event_id is None:
            return
        task = asyncio.create_task(self._post_echo(self._http, call))
        self._echo_tasks.add(task)
        task.add_done_callback(self._echo_tasks.discard)

    async def _post_echo(self, http: aiohttp.ClientSession, call: XCall) -> None:
        raw, headers = signed(echo_delivery(call), SECRETS["consumer_secret"])
        if await self._deliver_until_accepted(http, raw, headers, tries=4) is None:
            self.result.echoes_given_up += 1
        else:
            self.result.echoes_sent += 1

    async def _deliver_until_accepted(
        self,
        http: aiohttp.ClientSession,
        raw: bytes,
        headers: dict[str, str],
        tries: int | None = None,
    ) -> bool | None:
        """POST until a 200; True when it took more than one POST. With ``tries`` (X's
        echoes, not counted in the results' posts), None when none of them got a 200."""
        attempt = 0
        while True:
            if tries is not None and attempt >= tries:
                return None
            live = [i for i, d in enumerate(self.daemons) if i not in self._restarting and d]
            index = self.rng.choice(live or list(range(len(self.daemons))))
            url = f"http://127.0.0.1:{self.configs[index][1]}/webhooks"
            self.result.posts += tries is None
            try:
                async with http.post(url, data=raw, headers=headers) as response:
                    await response.read()
                    if response.status == 200:
                        return attempt > 0
            except (aiohttp.ClientError, TimeoutError):
                pass
            self.result.non_200 += tries is None
            attempt += 1
            await asyncio.sleep(min(2.0, 0.05 * 2**attempt) * self.rng.uniform(0.5, 1.0))

    # -- faults -------------------------------------------------------------------------

    async def _killer(self) -> None:
        faults = self.plan.faults
        low, high = faults.kill_window
        moments = sorted(self.rng.uniform(low, high) for _ in range(faults.kills))
        for moment in moments:
            if (wait := moment - self._now()) > 0:
                await asyncio.sleep(wait)
            index = self.rng.randrange(len(self.daemons))
            daemon = self.daemons[index]
            assert daemon is not None
            self._restarting.add(index)
            self.kill_times.append(time.time())
            await daemon.kill()  # SIGKILL
            self.result.kills += 1
            config, port = self.configs[index]
            restarted = await DaemonProcess.start(config, port)
            self.all_daemons.append(restarted)
            self.daemons[index] = restarted
            with contextlib.suppress(AssertionError):  # not ready while the broker is cut
                await restarted.wait_ready(timeout=90)
            self._restarting.discard(index)

    async def _cutter(self) -> None:
        for at, seconds in self.plan.faults.broker_cuts:
            if (wait := at - self._now()) > 0:
                await asyncio.sleep(wait)
            await self.proxy.cut()
            self._broker_down = True
            self.cut_times.append(time.time())
            self.result.cuts += 1
            await asyncio.sleep(seconds)
            await self.proxy.restore()
            self._broker_down = False

    def _schedule_windows(self) -> None:
        faults = self.plan.faults
        if faults.gateway_503 is not None:
            at, seconds = faults.gateway_503
            self._gateway_down_from, self._gateway_down_until = at, at + seconds
        if faults.x_429 is not None:
            at, seconds = faults.x_429
            self._x_down = (at, at + seconds)

    # -- the run ------------------------------------------------------------------------

    async def run(self) -> ChaosResult:
        plan = self.plan
        per_conversation = [
            plan.messages // plan.conversations
            + (1 if c < plan.messages % plan.conversations else 0)
            for c in range(plan.conversations)
        ]
        self.result.replies_expected = plan.messages * len(PARTS)
        self.last_accept = 0.0
        timeout = aiohttp.ClientTimeout(total=3.0)  # X gives up on a webhook call after ~3 s
        self.t0 = time.monotonic()
        self.wall0 = time.time()
        self._schedule_windows()
        async with aiohttp.ClientSession(timeout=timeout) as http:
            if plan.echoes:
                self._http = http
                self.x.on_call = self._echo_dm
            chaos = [asyncio.create_task(self._killer()), asyncio.create_task(self._cutter())]
            await asyncio.gather(
                *(self._conversation_sender(http, c, n) for c, n in enumerate(per_conversation))
            )
            drained = await self._wait_drained(plan.drain_timeout, chaos)
            self.x.on_call = None
            for task in [*chaos, *self._echo_tasks]:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if drained is not None:
            self.result.drain_seconds = drained - self.last_accept
        await asyncio.sleep(2.0)  # late duplicates, if any, show up
        self.result.elapsed = self._now()
        self.result.dead_lettered = await self._dead_letters()
        self._analyse()
        return self.result

    def _delivered_texts(self) -> set[str]:
        return {dm.text or "" for dm in self.x.sent_dms()}

    async def _wait_drained(self, timeout: float, chaos: list[asyncio.Task[None]]) -> float | None:
        """Seconds since the start when every expected reply was out (None: timed out)."""
        expected = self.result.replies_expected
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self._delivered_texts()) >= expected and all(t.done() for t in chaos):
                return self._now()
            for task in chaos:
                if task.done() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            await asyncio.sleep(0.25)
        return None

    async def _dead_letters(self) -> int:
        connection = await aio_pika.connect(
            host=RABBIT_HOST, port=RABBIT_PORT, virtualhost=self.vhost
        )
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(f"{self.prefix}.dead-letter", passive=True)
            return int(queue.declaration_result.message_count or 0)

    def _analyse(self) -> None:
        r = self.result
        by_conversation: dict[tuple[str, str], list[str]] = defaultdict(list)
        for dm in self.x.sent_dms():
            by_conversation[(dm.user_id, dm.recipient_id or "")].append(dm.text or "")
        r.gateway_calls = len(self.gateway.requests)
        delivered = 0
        for c in range(self.plan.conversations):
            bot, user = self._conversation(c)
            expected = [f"c{c}m{k}/{p}" for k in self.accepted_order[c] for p in PARTS]
            position = {text: i for i, text in enumerate(expected)}
            got = by_conversation.pop((bot, user), [])
            seen: set[str] = set()
            highest = -1
            for text in got:
                if text not in position:
                    r.unexpected += 1
                elif text in seen:
                    r.duplicated += 1
                    if position[text] < highest:
                        r.late_duplicates += 1
                else:
                    seen.add(text)
                    if position[text] < highest:
                        r.out_of_order += 1
                    highest = max(highest, position[text])
            delivered += len(seen)
            r.lost += len(expected) - len(seen)
        r.unexpected += sum(len(v) for v in by_conversation.values())
        r.dup_causes = self._diagnose_duplicates()
        r.daemon_events = self._daemon_events()
        r.replies_delivered = delivered
        r.replies_expected = sum(len(v) for v in self.accepted_order.values()) * len(PARTS)

    def _daemon_events(self) -> dict[str, int]:
        """Warning and error events in every daemon process's JSON log, by name."""
        events: dict[str, int] = defaultdict(int)
        for daemon in self.all_daemons:
            for line in daemon.logs:
                with contextlib.suppress(ValueError):
                    record = json.loads(line)
                    if record.get("level") in ("warning", "error", "critical"):
                        events[str(record.get("event"))] += 1
        return dict(events)

    def _diagnose_duplicates(self) -> dict[str, int]:
        """Sort every extra reply copy by what its message went through."""
        sends: dict[str, list[float]] = defaultdict(list)
        for dm in self.x.sent_dms():
            sends[dm.text or ""].append(dm.at)
        asked: dict[str, int] = defaultdict(int)
        for request in self.gateway.requests:
            asked[request.text] += 1
        causes: dict[str, int] = defaultdict(int)
        faults = self.kill_times + self.cut_times
        for text, times in sends.items():
            if len(times) < 2:
                continue
            message = text.rsplit("/", 1)[0]
            repeated = [len(sends.get(f"{message}/{p}", [])) > 1 for p in PARTS]
            cause = self._cause(message, times, asked[message], all(repeated))
            causes[cause] += len(times) - 1
            if len(self.result.notes) < 40:
                near = [round(k - self.wall0, 2) for k in faults if times[0] - 3 <= k <= times[-1]]
                self.result.notes.append(
                    f"{text}: sent at {[round(t - self.wall0, 2) for t in times]}, "
                    f"asked {asked[message]}x, redelivered {message in self.redelivered}, "
                    f"kills/cuts near {near}; {cause}"
                )
        return dict(causes)

    def _cause(self, message: str, times: list[float], asked: int, every_part: bool) -> str:
        if message in self.redelivered and asked > 1:
            cause = "X redelivered it (no 200 seen) and it was bridged twice"
        elif asked > 1:
            cause = "bot asked again (no redelivery by X)"
        elif every_part:
            cause = "every reply resent from the checkpoint, bot asked once"
        # "Within 1 s": before the fault, or just after it, before the daemon noticed
        # (a cut shows only when the proxy's close reaches it).
        elif any(abs(k - times[0]) <= 1.0 for k in self.kill_times):
            cause = "one reply resent (sent within 1 s of a kill)"
        elif any(abs(k - times[0]) <= 1.0 for k in self.cut_times):
            cause = "one reply resent (sent within 1 s of a broker cut)"
        else:
            cause = "one reply resent (NOT within 1 s of a kill or cut)"
        # A DM sent just before a SIGKILL may be recorded by FakeX a moment after it.
        faults = self.kill_times + self.cut_times
        if not any(times[0] - 1.0 <= k <= times[-1] for k in faults):
            cause += "; NO kill or broker cut between the copies"
        return cause


async def run_chaos(plan: ChaosPlan, vhost: str, workdir: Path) -> ChaosResult:
    harness = ChaosHarness(plan, vhost, workdir)
    try:
        await harness.start()
        return await harness.run()
    finally:
        await harness.stop()


def summary_table(results: list[ChaosResult]) -> str:
    head = (
        "| scenario | messages | accepted (200s) | replies delivered | lost "
        "| duplicated (of which after a later reply) | out of order | dead-lettered "
        "| time to drain | faults |\n"
        "|---|---|---|---|---|---|---|---|---|---|"
    )
    rows = []
    for r in results:
        drain = f"{r.drain_seconds:.1f} s" if r.drain_seconds is not None else "NOT drained"
        faults = []
        if r.kills:
            faults.append(f"{r.kills} SIGKILLs")
        if r.cuts:
            faults.append(f"{r.cuts} broker cuts")
        rows.append(
            f"| {r.name} | {r.messages:,} | {r.accepted:,} ({r.non_200:,} non-200 answers) "
            f"| {r.replies_delivered:,} of {r.replies_expected:,} | {r.lost} "
            f"| {r.duplicated} ({r.late_duplicates}) "
            f"| {r.out_of_order} | {r.dead_lettered} | {drain} | {', '.join(faults) or '-'} |"
        )
    return "\n".join([head, *rows])
