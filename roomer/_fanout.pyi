from roomer._fanout_py import Fanout as Fanout
from roomer._fanout_py import Peer as Peer

__all__ = ["Fanout", "Peer"]
