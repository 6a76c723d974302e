"""Exceptions that end a stage with a message for the user instead of a traceback."""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix (bad params, missing data, no network); the message says how."""


class ParamsError(UserError):
    """A params.yaml value is unknown, of the wrong type, or out of range."""


class DataError(UserError):
    """Input data is missing, inconsistent or unusable."""
