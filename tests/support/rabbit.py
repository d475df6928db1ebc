"""Real RabbitMQ for tests: a throw-away virtual host per test run."""

from __future__ import annotations

import shutil
import subprocess
import uuid

RABBIT_HOST = "127.0.0.1"
RABBIT_PORT = 5672


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
