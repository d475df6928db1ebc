"""Real RabbitMQ for tests: a throw-away virtual host per test run."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import threading
import uuid
from collections import defaultdict

import aio_pika
import aiormq

from twitter_bot.queue.rabbit import Topology

RABBIT_HOST = "127.0.0.1"
RABBIT_PORT = 5672

# (vhost, queue prefix) of every daemon configured since the last clean-up.
_STREAM_OWNERS: set[tuple[str, str]] = set()


def _ctl(*args: str) -> None:
    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        raise RuntimeError("rabbitmqctl not found: the tests need the local RabbitMQ")
    subprocess.run([ctl, "-q", *args], check=True, capture_output=True, timeout=60)


def create_vhost() -> str:
    """Create a uniquely named vhost that guest may use; return its name."""
    name = f"twitter-bot-test-{uuid.uuid4().hex[:12]}"
    _ctl("add_vhost", name)
    _ctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    return name


def delete_vhost(name: str) -> None:
    _ctl("delete_vhost", name)


def set_policy(vhost: str, name: str, pattern: str, definition: str) -> None:
    _ctl("set_policy", "-p", vhost, "--apply-to", "queues", name, pattern, definition)


def clear_policy(vhost: str, name: str) -> None:
    _ctl("clear_policy", "-p", vhost, name)


def queue_types(vhost: str) -> dict[str, str]:
    """Queue name -> type (classic, quorum) in a vhost."""
    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        raise RuntimeError("rabbitmqctl not found: the tests need the local RabbitMQ")
    out = subprocess.run(
        [ctl, "-q", "list_queues", "-p", vhost, "name", "type", "--no-table-headers"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return dict(line.split("\t")[:2] for line in out.splitlines() if "\t" in line)


def streams_may_exist(vhost: str, queue_prefix: str) -> None:
    """Note a daemon configuration whose streams delete_test_streams must remove."""
    _STREAM_OWNERS.add((vhost, queue_prefix))


def delete_test_streams() -> None:
    """Delete the streams of every daemon configured since the last call.

    RabbitMQ keeps files open for each stream until it is deleted, and a whole run of the
    suite declares hundreds in its vhost: past the broker's open-file limit (1024 on a
    stock install) it fails to open any file and stops. Queues cost no files when idle.
    Runs its own event loop in a thread: it is called outside the tests' loops.
    """
    owners = list(_STREAM_OWNERS)
    _STREAM_OWNERS.clear()
    if not owners:
        return
    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(_delete_streams(owners))
        except BaseException as exc:  # reported below, in the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=run, name="delete-test-streams")
    thread.start()
    thread.join(30)
    if errors:
        raise errors[0]


async def _delete_streams(owners: list[tuple[str, str]]) -> None:
    prefixes_by_vhost: dict[str, list[str]] = defaultdict(list)
    for vhost, prefix in owners:
        prefixes_by_vhost[vhost].append(prefix)
    for vhost, prefixes in prefixes_by_vhost.items():
        try:
            connection = await aio_pika.connect(
                host=RABBIT_HOST, port=RABBIT_PORT, virtualhost=vhost
            )
        except aiormq.exceptions.ProbableAuthenticationError:
            continue  # the vhost is gone already, and its streams with it
        async with connection:
            channel = await connection.channel()
            for prefix in prefixes:
                for stream, _, _ in Topology(prefix=prefix, shards=1).streams:
                    await channel.queue_delete(stream)  # idempotent: none is fine
