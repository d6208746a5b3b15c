from roomer._fanout_py import BUILT_FOR_PICOWS as BUILT_FOR_PICOWS
from roomer._fanout_py import Fanout as Fanout
from roomer._fanout_py import InboundCore as InboundCore
from roomer._fanout_py import Peer as Peer
from roomer._fanout_py import Relay as Relay

__all__ = ["BUILT_FOR_PICOWS", "Fanout", "InboundCore", "Peer", "Relay"]
