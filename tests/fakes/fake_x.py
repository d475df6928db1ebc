"""FakeX for tests: the implementation lives in the package, where the sandbox serves it.

Re-exported here (private helpers included, for `fake_x_management`) so tests keep
importing `tests.fakes.fake_x`.
"""

from twitter_bot.sandbox.fake_x import (
    DEFAULT_CONSUMER_KEY,
    DEFAULT_CONSUMER_SECRET,
    DM_KINDS,
    MAX_CHUNK,
    MAX_TEXT,
    EndpointKind,
    FakeMedia,
    FakeX,
    FakeXUser,
    MediaProcessing,
    Rejection,
    ScriptedFailure,
    XCall,
    _Incoming,
    _OAuthVerifier,
    _Reject,
    _response,
    _v11_reject,
    v2_problem,
    v11_error,
)

__all__ = [
    "DEFAULT_CONSUMER_KEY",
    "DEFAULT_CONSUMER_SECRET",
    "DM_KINDS",
    "MAX_CHUNK",
    "MAX_TEXT",
    "EndpointKind",
    "FakeMedia",
    "FakeX",
    "FakeXUser",
    "MediaProcessing",
    "Rejection",
    "ScriptedFailure",
    "XCall",
    "_Incoming",
    "_OAuthVerifier",
    "_Reject",
    "_response",
    "_v11_reject",
    "v2_problem",
    "v11_error",
]
