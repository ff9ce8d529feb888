"""One small exception hierarchy; messages say what was expected, what was found, what to do."""

from __future__ import annotations


class SparkTweetError(Exception):
    """Base class for every error sparktweet raises on purpose."""


class ConfigError(SparkTweetError):
    """A configuration file or ``--set`` override is missing, malformed or of the wrong type."""


class InputError(SparkTweetError):
    """An input dataset cannot be read or lacks a required column."""


class ModelError(SparkTweetError):
    """A saved model or one of its artifacts is missing, corrupt or of an unknown format version."""


class TicketIdError(SparkTweetError):
    """A ticket ID is malformed or its check character does not match."""
