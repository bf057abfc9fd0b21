"""The root of every error the gateway raises on purpose.

OAuth-facing errors are authlib ``OAuth2Error`` subclasses (they carry ``error``,
``description`` and ``status_code``); everything else derives from :class:`GatewayError`,
so one handler can turn it into a clear page or a one-line start-up message.
"""


class GatewayError(Exception):
    """Base class of the gateway's own errors."""


class ConfigError(GatewayError):
    """The gateway cannot start with the given settings, policies or keys.

    The message is one line naming what is wrong, meant for an operator's terminal.
    """


class BrowserError(GatewayError):
    """Something a person's browser asked for cannot be done, and there is nobody safe to
    redirect to. The web layer renders it as an error page (never a redirect)."""

    def __init__(self, error: str, description: str = "", status_code: int = 400) -> None:
        super().__init__(error)
        self.error = error
        self.description = description
        self.status_code = status_code
