"""The keys of the watchdog and gap recovery: read, defaulted, and refused naming the key."""

from __future__ import annotations

import pytest

from tests.test_settings import TW, with_override
from twitter_bot.settings import ConfigError, GapRecoverySettings, render_summary


def test_gap_recovery_is_off_by_default_and_read_when_set() -> None:
    assert with_override("").api.gap_recovery == GapRecoverySettings()

    settings = with_override(
        f"""
        {TW}.api {{
          account-activity: v2
          crc-watchdog-interval: 5m
          gap-recovery {{ enabled: true, threshold: 15m, state-file: "/var/lib/tb/gap.json" }}
        }}
        """
    )

    assert settings.api.gap_recovery == GapRecoverySettings(
        enabled=True, threshold=900.0, state_file="/var/lib/tb/gap.json"
    )
    assert settings.api.crc_watchdog_interval == 300.0
    summary = render_summary(settings)
    assert "crc-watchdog-interval: 300s" in summary
    assert "gap-recovery: on, threshold 900s, state file /var/lib/tb/gap.json" in summary


@pytest.mark.parametrize(
    ("hocon", "key", "problem"),
    [
        (
            f"{TW}.api {{ account-activity: v2, gap-recovery.enabled: true }}",
            f"{TW}.api.gap-recovery.state-file",
            "is required when gap recovery is enabled",
        ),
        (
            f'{TW}.api.gap-recovery {{ enabled: true, state-file: "s.json" }}',
            f"{TW}.api.gap-recovery.enabled",
            "needs account-activity v2 or xaa",
        ),
        (
            f"{TW}.api.gap-recovery.threshold: soon",
            f"{TW}.api.gap-recovery.threshold",
            "must be an amount",
        ),
        (f"{TW}.api.gap-recovery.enabeld: true", f"{TW}.api.gap-recovery.enabeld", "unknown key"),
        (
            f'{TW}.api.crc-watchdog-interval: 1h\n{TW}.auth.bearer-token: ""',
            f"{TW}.auth.bearer-token",
            "is required with api.crc-watchdog-interval",
        ),
        (
            f'{TW}.api {{ crc-watchdog-interval: 1h, webhook-url: "" }}',
            f"{TW}.api.webhook-url",
            "is required with api.crc-watchdog-interval",
        ),
        (
            f"{TW}.api.crc-watchdog-interval: 1h\n"
            f'{TW}.auth {{ default-access-token: "", default-access-secret: "" }}',
            f"{TW}.auth.default-access-token",
            "on account-activity v1.1",
        ),
    ],
)
def test_what_the_daemons_own_calls_need_is_checked_at_load(
    hocon: str, key: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        with_override(hocon)

    assert any(e.key == key and problem in e.problem for e in caught.value.errors), caught.value
