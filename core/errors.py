"""User errors versus bugs, and how the command-line entry points report each.

A user error is a mistake the user can fix: a bad config value or flag, a missing or damaged file,
a model or dataset that is not there. It is printed as one line, ``error: <what and what to do>``,
and the program exits with status 2. Anything else is a bug and keeps its traceback.
"""

import argparse
import sys
from typing import Callable, NoReturn

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # the shell's convention for SIGINT


class UserError(Exception):
    """A mistake the user can fix; the message names the key or file and what to do."""


class MissingResourceError(UserError, FileNotFoundError):
    """A file, checkpoint, model or dataset that is not where it was looked for."""


class DamagedFileError(UserError, ValueError):
    """A file that exists but cannot be read back (truncated, corrupted, or not what it claims)."""


def one_line(message: str) -> str:
    """A multi-line message joined into one line (hints after a newline become '; ...')."""
    parts = [line.strip() for line in str(message).splitlines() if line.strip()]
    return "; ".join(parts)


def fail(message: str) -> NoReturn:
    """Print ``error: message`` on stderr and exit with the user-error status."""
    sys.stderr.write(f"error: {one_line(message)}\n")
    sys.stderr.flush()
    sys.exit(EXIT_USER_ERROR)


def run_main(main: Callable[[], None]) -> None:
    """Run a script's ``main``: user errors become one ``error:`` line, Ctrl-C a short notice."""
    try:
        main()
    except UserError as error:
        fail(str(error))
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(EXIT_INTERRUPTED)


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad flag as a UserError (one line) instead of usage plus message."""

    def __init__(self, *args, **kwargs):
        # Under ``python -m pkg.module`` argparse would say "module.py"; name what the user ran instead.
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        if "prog" not in kwargs and spec is not None:
            kwargs["prog"] = f"python -m {spec.name.removesuffix('.__main__')}"
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise UserError(f"{message} (see {self.prog} --help)")

    def add_config_arguments(self, required: bool = True, several: bool = False, config_help: str = "YAML config "
                             "(see configs/)", set_help: str = "dotted overrides, e.g. train.lr=3e-4 (may be repeated)"
                             ) -> None:
        """``--config FILE`` (repeatable with ``several``) and ``--set KEY=VALUE ...`` (repeatable)."""
        if several:
            self.add_argument("--config", action="append", required=required, help=config_help + " (repeatable)")
        else:
            self.add_argument("--config", required=required, help=config_help)
        self.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE", help=set_help)


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
