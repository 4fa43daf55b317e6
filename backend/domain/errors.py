"""Domain errors: each carries one clear sentence for the operator."""

from __future__ import annotations


class DomainError(Exception):
    """A command was refused by a rule; nothing was changed."""


class InvalidInput(DomainError, ValueError):
    """The request itself is malformed (empty name, compartment 0, ...)."""


class NotFound(DomainError, LookupError):
    """The bank, compartment or transaction does not exist."""


class RuleViolation(DomainError):
    """The request is well formed but the bank's state forbids it."""


class ConcurrencyConflict(DomainError):
    """Another writer appended to the same bank first; the command may be retried."""
