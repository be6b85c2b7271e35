"""Every error a person using the TRE can meet.

A :class:`TREError` is shown to the user as its message alone, without a traceback: the CLI
prints it and exits with :attr:`TREError.exit_code`; the portal answers with
:attr:`TREError.http_status` and the message as the body. Messages say what went wrong and what
to do next. Internal details (paths to the stores, identifiers, counts below a threshold) go to
the log, never into a message.

Anything that is not a :class:`TREError` is a bug in the TRE and is shown with a traceback.
"""


class TREError(Exception):
    """Base of every error meant for a person rather than a developer."""

    exit_code = 1
    http_status = 400

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(TREError):
    """A setting is missing or has a value the TRE cannot use."""

    exit_code = 78  # EX_CONFIG
    http_status = 500


class InvalidInput(TREError):
    """Something a person supplied (a file, an argument, a form field) is not acceptable."""

    exit_code = 65  # EX_DATAERR
    http_status = 422


class NotFound(TREError):
    """The thing asked for does not exist (or the user may not know that it exists)."""

    exit_code = 66  # EX_NOINPUT
    http_status = 404


class NotInitialised(TREError):
    """The TRE home, or its metadata database, has not been created yet."""

    exit_code = 66
    http_status = 503


class AuthenticationFailed(TREError):
    """The caller could not be identified: no token, or a token that is not valid."""

    exit_code = 77  # EX_NOPERM
    http_status = 401


class PermissionDenied(TREError):
    """The caller is identified but may not do this. The message says why."""

    exit_code = 77  # EX_NOPERM
    http_status = 403


class InvalidTransition(TREError):
    """The object is not in a state that allows this action."""

    exit_code = 65
    http_status = 409


class IntegrityError(TREError):
    """Something that must not change has changed: a signature, a checksum, the audit chain."""

    exit_code = 3
    http_status = 409


class ServiceUnavailable(TREError):
    """A server the TRE needs (Keycloak, the hub, a database) is not running or not reachable."""

    exit_code = 69  # EX_UNAVAILABLE
    http_status = 503


def by_name(name: str) -> type[TREError]:
    """The error class called ``name`` (as sent across a process or a socket), or
    :class:`ServiceUnavailable` for a name that is not one of ours."""
    found = globals().get(name)
    return found if isinstance(found, type) and issubclass(found, TREError) else ServiceUnavailable


class LimitExceeded(TREError):
    """A computation went past one of its limits (time, memory) and was stopped; ``limit`` says
    which. Callers turn it into advice on what to ask for instead."""

    exit_code = 65
    http_status = 422

    def __init__(self, limit: str) -> None:
        super().__init__(f"stopped past its {limit} limit")
        self.limit = limit
