"""What the command line shows of the library's log: each record as its bare message, as the library code printed
it before it logged. INFO goes to stdout and warnings to stderr, so the commands' output is what it was; the
streams are looked up at every record (a test's captured stdout, a redirected one)."""

from __future__ import annotations

import logging
import sys

LIBRARY_LOGGER = "yolostitch"


class ConsoleHandler(logging.Handler):
    """Writes ``record.getMessage()`` (and any traceback) plus a newline: INFO and below to the current
    ``sys.stdout``, WARNING and up to the current ``sys.stderr``."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = sys.stderr if record.levelno >= logging.WARNING else sys.stdout
            stream.write(self.format(record) + "\n")
            stream.flush()  # in order with child processes and progress bars writing to the same terminal
        except Exception:
            self.handleError(record)


def show_library_log() -> None:
    """Show the ``yolostitch`` loggers' INFO and up on the console (once, however often a command runs)."""
    logger = logging.getLogger(LIBRARY_LOGGER)
    if not any(isinstance(h, ConsoleHandler) for h in logger.handlers):
        logger.addHandler(ConsoleHandler())
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)
