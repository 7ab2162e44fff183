"""Exception hierarchy; each DecodeError subclass carries a stable `reason` label for metrics."""

from __future__ import annotations


class FlowdError(Exception):
    """Base of every error flowd raises on purpose."""


class DecodeError(FlowdError):
    """Bad input from the network. Any other exception escaping a decoder is a bug."""

    reason: str = "malformed"

    def __init__(self, message: str, *, offset: int | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.offset = offset
        if reason is not None:
            self.reason = reason


class TruncatedError(DecodeError):
    """A read ran past the end of the datagram or of a declared length."""

    reason = "truncated"


class UnsupportedVersionError(DecodeError):
    """The version word names no protocol flowd decodes."""

    reason = "unsupported_version"


class TemplateError(DecodeError):
    """A template or options template that cannot be accepted."""

    reason = "bad_template"


class ConfigError(FlowdError):
    """An invalid configuration value; the message names the key."""


class SinkError(FlowdError):
    """The output sink could not accept a batch."""
