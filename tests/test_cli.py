"""The command line as an operator uses it: real processes, real files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.daemon import SECRETS, cli_env, write_config

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "twitter_bot", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env(**env),
        cwd=REPO,
    )


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(tmp_path / "app.conf", vhost="/", queue_prefix="cli", http_port=5756)


def test_check_config_prints_a_summary_without_secrets(config: Path) -> None:
    result = run_cli("check-config", "--config", str(config))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "1230981029831098231" in out
    assert "aaaabbbb-4444-5555-6666-ccccddddeeee" in out
    assert "https://bot.example.com/webhooks" in out
    assert "127.0.0.1:5672" in out
    for secret in SECRETS.values():
        assert secret not in out
        assert secret[-12:] not in out  # a token's prefix is its public user id


def test_config_path_from_environment(config: Path) -> None:
    result = run_cli("check-config", TWITTER_BOT_CONFIG=str(config))
    assert result.returncode == 0, result.stderr
    assert str(config) in result.stdout


def test_default_config_file_is_valid() -> None:
    result = run_cli("check-config")
    assert result.returncode == 0, result.stderr
    assert "conf/application.conf" in result.stdout


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (("user-id: 1230981029831098231", "user-id: -5"), "chatbots.twitter-bot.bots[0].user-id"),
        (("message-timeout: 15s", "message-timeout: soon"), "message-timeout"),
        (('hosts: ["127.0.0.1:5672"]', "hosts: []"), "chatbots.messaging.rabbit.hosts"),
        (
            ('webhook-url: "https://bot.example.com/webhooks"', 'webhook-url: "not a url"'),
            "webhook-url",
        ),
    ],
)
def test_wrong_config_names_the_key_and_exits_nonzero_without_traceback(
    config: Path, edit: tuple[str, str], key: str
) -> None:
    text = config.read_text()
    assert edit[0] in text
    config.write_text(text.replace(*edit))
    for command in ("check-config", "run"):
        result = run_cli(command, "--config", str(config))
        assert result.returncode == 2
        assert key in result.stderr
        assert "Traceback" not in result.stderr + result.stdout
        assert len(result.stderr.strip().splitlines()) == 1
        for secret in SECRETS.values():
            assert secret not in result.stderr


def test_missing_config_file_is_one_line(tmp_path: Path) -> None:
    result = run_cli("check-config", "--config", str(tmp_path / "nope.conf"))
    assert result.returncode == 2
    assert "nope.conf" in result.stderr
    assert "Traceback" not in result.stderr
