"""Errors of the backplane layer."""

from __future__ import annotations

__all__ = ["MissingExtra"]


class MissingExtra(ImportError):
    """A backplane URL names a broker whose client library is not installed.

    The message names the pip command that installs it (``pip install 'roomer[redis]'``).
    """

    def __init__(self, extra: str, library: str) -> None:
        super().__init__(
            f"the {extra} backplane needs {library}, which is not installed: "
            f"pip install 'roomer[{extra}]'")
