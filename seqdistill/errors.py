"""User-facing errors: each becomes one clear line and exit code 1 in the CLI."""


class SeqdistillError(Exception):
    """Something the user can fix (bad config, bad input, unreachable server)."""


class ConfigError(SeqdistillError):
    """Invalid or unknown configuration."""


class DataError(SeqdistillError):
    """Unreadable or malformed input data."""


class BackendError(SeqdistillError):
    """A generation backend failed in a way the user can act on."""
