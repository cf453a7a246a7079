"""Errors that are the user's to fix: the CLI prints them as one line each and exits with code 2.

A check that can go on after a problem (the next section of a spec, the next location) records
it in ``Problems`` and goes on, so one pass reports every problem of an input (``UserErrors``),
and the user fixes them together.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any


class UserError(ValueError):
    """A bad spec, parameter or path, with a message that names the file, key and valid values.

    ``path`` and ``detail``, when the error was made by a ``Checker``: the key path inside the file
    and what is wrong there (a study names a generated run's problem by where the user wrote it)."""

    exit_code = 2

    def __init__(self, message: str, path: str | None = None, detail: str | None = None):
        super().__init__(message)
        self.path = path
        self.detail = detail

    @property
    def errors(self) -> list[UserError]:
        """Its problems, one per line the CLI prints."""
        return [self]


class UserErrors(UserError):
    """Every problem found in one pass over an input, in the order found."""

    def __init__(self, errors: Iterable[UserError]):
        self._errors = list(errors)
        super().__init__("\n".join(str(e) for e in self._errors))

    @property
    def errors(self) -> list[UserError]:
        return self._errors


class Problems:
    """The UserErrors of independent checks, collected so that one pass finds them all.

    ``get(check, *args)`` returns what the check returns, or ``default`` after recording its error;
    ``raise_any()`` raises what was recorded (each message once), if anything."""

    def __init__(self) -> None:
        self.errors: list[UserError] = []

    def add(self, error: UserError) -> None:
        seen = {str(e) for e in self.errors}
        for each in error.errors:
            if str(each) not in seen:
                seen.add(str(each))
                self.errors.append(each)

    def get(self, check: Callable[..., Any], *args: Any, default: Any = None, **kwargs: Any) -> Any:
        try:
            return check(*args, **kwargs)
        except UserError as error:
            self.add(error)
            return default

    def __bool__(self) -> bool:
        return bool(self.errors)

    def raise_any(self) -> None:
        if len(self.errors) == 1:
            raise self.errors[0]
        if self.errors:
            raise UserErrors(self.errors)
