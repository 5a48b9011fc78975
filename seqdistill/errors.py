"""User-facing errors: each becomes one clear line and exit code 1 in the CLI."""


class SeqdistillError(Exception):
    """Something the user can fix (bad config, bad input, unreachable server)."""


class ConfigError(SeqdistillError):
    """Invalid or unknown configuration."""


class DataError(SeqdistillError):
    """Unreadable or malformed input data."""


class BackendError(SeqdistillError):
    """A generation backend failed in a way the user can act on."""


class Stopped(KeyboardInterrupt):
    """A stop signal (SIGINT, SIGTERM, SIGHUP) unwinding the run like Ctrl-C does.

    A KeyboardInterrupt, so `except Exception` blocks let it through and `with` blocks clean up on the way
    out; the CLI exits with the shell's code for the signal, 128 + its number (130, 143, 129).
    """

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        import signal

        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum
