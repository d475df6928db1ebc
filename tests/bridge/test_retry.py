"""The retry policy: how long a transient failure waits, and the least time before giving up."""

from __future__ import annotations

from twitter_bot.bridge.retry import RetryPolicy
from twitter_bot.settings import MessagingSettings

DEFAULTS = MessagingSettings()


def default_policy() -> RetryPolicy:
    return RetryPolicy(
        DEFAULTS.max_attempts, DEFAULTS.retry_initial_delay, DEFAULTS.retry_max_delay
    )


def test_each_wait_lies_between_half_and_all_of_the_doubling_ceiling() -> None:
    policy = RetryPolicy(max_attempts=12, initial=1.0, maximum=300.0)
    for attempt, ceiling in [(1, 1), (2, 2), (3, 4), (9, 256), (10, 300), (11, 300)]:
        waits = [policy.delay(attempt) for _ in range(2000)]
        assert ceiling / 2 <= min(waits) and max(waits) <= ceiling
        assert max(waits) - min(waits) > ceiling / 4  # jittered, not fixed


def test_a_retry_after_longer_than_the_backoff_is_honoured() -> None:
    policy = RetryPolicy(max_attempts=10, initial=1.0, maximum=300.0)
    assert policy.delay(1, hint=42.0) == 42.0


def test_with_the_defaults_a_four_minute_outage_never_exhausts_the_attempts() -> None:
    # Dead letters are for messages that cannot be bridged, not for a platform outage.
    assert DEFAULTS.max_attempts == 10
    assert default_policy().shortest_span() == 255.5
    for _ in range(2000):
        policy = default_policy()
        assert sum(policy.delay(n) for n in range(1, policy.max_attempts)) >= 255.5
