"""User-facing errors. The CLI prints these as one line (no traceback unless --debug)."""


class NeuralRenderError(Exception):
    """An error caused by user input (a file, a field, a name); the message says which."""


class DataError(NeuralRenderError):
    """A data file is missing or malformed. The message names the file and the field."""

    def __init__(self, path, message: str, field: str | None = None):
        self.path = str(path)
        self.field = field
        where = f"{self.path}" + (f" [{field}]" if field else "")
        super().__init__(f"{where}: {message}")


class ConfigError(NeuralRenderError):
    """A config key or value is wrong. The message names the key and the valid ones."""


class MissingDependencyError(NeuralRenderError):
    """An optional dependency is needed; the message names the extra to install."""

    def __init__(self, package: str, extra: str, feature: str = ""):
        what = f" for {feature}" if feature else ""
        super().__init__(
            f"'{package}' is needed{what} but is not installed; install it with: pip install 'neuralrender[{extra}]'"
        )


def script_main(main):
    """Decorator for the `main(argv=None) -> int` of a recipe or script: a NeuralRenderError (or an OSError on
    a user's file) becomes one line `error: ...` on stderr and exit status 2, as in the CLI."""
    import functools
    import sys

    @functools.wraps(main)
    def wrapped(argv=None):
        try:
            return main(argv)
        except (NeuralRenderError, OSError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2

    return wrapped
