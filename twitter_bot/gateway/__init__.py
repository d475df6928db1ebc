"""The bot platform client (gateway-api.md): deliver a user's message, read the bot's replies.

Knows nothing of X or of queues: the bridge maps its messages to `UserMessage`
and acts on the `Reply` values and `GatewayError`s it gets back.
"""

from twitter_bot.gateway.client import GatewayClient
from twitter_bot.gateway.errors import (
    GatewayError,
    GatewayPermanentError,
    GatewayTransientError,
    error_for_status,
    is_transient_status,
    parse_retry_after,
)
from twitter_bot.gateway.messages import AttachmentType, GatewayAttachment, UserMessage
from twitter_bot.gateway.replies import (
    InvalidRepliesError,
    MediaKind,
    MediaReply,
    ParsedReplies,
    QuickReply,
    Reply,
    ReplyViolation,
    SkippedReply,
    TextReply,
    TypingReply,
    parse_replies,
    parse_replies_strict,
    reply_to_json,
)

__all__ = [
    "AttachmentType",
    "GatewayAttachment",
    "GatewayClient",
    "GatewayError",
    "GatewayPermanentError",
    "GatewayTransientError",
    "InvalidRepliesError",
    "MediaKind",
    "MediaReply",
    "ParsedReplies",
    "QuickReply",
    "Reply",
    "ReplyViolation",
    "SkippedReply",
    "TextReply",
    "TypingReply",
    "UserMessage",
    "error_for_status",
    "is_transient_status",
    "parse_replies",
    "parse_replies_strict",
    "parse_retry_after",
    "reply_to_json",
]
