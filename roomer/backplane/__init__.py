"""Backplanes: rooms, presence and messages shared by server processes through a broker.

:class:`Cluster` is the protocol (see :mod:`roomer.backplane.cluster`), run over a transport
chosen by URL with :func:`create`: ``redis://host:port/db`` (``pip install 'roomer[redis]'``),
``nats://host:port`` (``pip install 'roomer[nats]'``) or ``memory://name`` (in-process).
Channel names are in :mod:`roomer.backplane.names`, the bytes on the wire in
:mod:`roomer.backplane.envelope`.
"""

from __future__ import annotations

from .cluster import Cluster, ClusterEvents
from .errors import MissingExtra, NodeIdInUse
from .names import Names
from .transport import Transport, create

__all__ = ["Cluster", "ClusterEvents", "MissingExtra", "Names", "NodeIdInUse", "Transport",
           "create"]
