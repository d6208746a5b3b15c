"""Errors of the backplane layer."""

from __future__ import annotations

__all__ = ["MissingExtra", "NodeIdInUse"]


class MissingExtra(ImportError):
    """A backplane URL names a broker whose client library is not installed.

    The message names the pip command that installs it (``pip install 'roomer[redis]'``).
    """

    def __init__(self, extra: str, library: str) -> None:
        super().__init__(
            f"the {extra} backplane needs {library}, which is not installed: "
            f"pip install 'roomer[{extra}]'")


class NodeIdInUse(ConnectionError):
    """A node starting with the node id of a live node of the same cluster (same broker and
    prefix): it does not join, so that the two never corrupt each other's member lists.

    A ``ConnectionError``, as an unreachable broker is: ``roomer serve`` exits with its
    message, which names the id and how to fix it.
    """

    def __init__(self, node_id: str, other: str) -> None:
        super().__init__(
            f"node id {node_id!r} is already used by a live node of this cluster (key "
            f"{other}); give every node its own node_id (--node-id), or none: the default "
            "(host-pid-random) is unique")
        self.node_id = node_id
