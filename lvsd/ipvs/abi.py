"""The kernel ABI lvsd speaks to IPVS: numbers from ``linux/netlink.h``, ``linux/genetlink.h``
and ``include/uapi/linux/ip_vs.h``, each defined here and nowhere else.

The service flag bits (``SVC_F_*``), tunnel checksum flags and forwarding codes are part of the
table model and live in ``lvsd.model``; this module holds only the wire vocabulary.
"""

from __future__ import annotations

import enum

# --- netlink (linux/netlink.h) ----------------------------------------------------------------
NETLINK_GENERIC = 16
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10  # errors carry the failed request's header only, not its payload
NETLINK_EXT_ACK = 11  # errors carry extended-ack attributes (a message, a bad attribute)
SO_RCVBUFFORCE = 33

NLMSG_HDRLEN = 16
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLM_F_CAPPED = 0x100  # in an error reply: the request's payload was left out
NLM_F_ACK_TLVS = 0x200  # in an error reply: extended-ack attributes follow
NLA_F_NESTED = 0x8000
NLA_TYPE_MASK = 0x3FFF


class ExtAck(enum.IntEnum):
    """``enum nlmsgerr_attrs``: what an extended acknowledgement may carry."""

    MSG = 1  # a NUL-terminated message
    OFFS = 2  # u32: offset of the offending attribute within the request
    COOKIE = 3
    POLICY = 4
    MISS_TYPE = 5
    MISS_NEST = 6


# --- generic netlink (linux/genetlink.h) ------------------------------------------------------
GENL_HDRLEN = 4
GENL_ID_CTRL = 0x10
CTRL_CMD_GETFAMILY = 3
CTRL_VERSION = 1


class CtrlAttr(enum.IntEnum):
    FAMILY_ID = 1
    FAMILY_NAME = 2


# --- IPVS (linux/ip_vs.h) ---------------------------------------------------------------------
IPVS_GENL_NAME = "IPVS"
IPVS_GENL_VERSION = 1
IP_VS_SCHEDNAME_MAXLEN = 16  # the NUL included
IP_VS_PENAME_MAXLEN = 16
IP_VS_CONN_F_FWD_MASK = 0x7


class Cmd(enum.IntEnum):
    NEW_SERVICE = 1
    SET_SERVICE = 2
    DEL_SERVICE = 3
    GET_SERVICE = 4
    NEW_DEST = 5
    SET_DEST = 6
    DEL_DEST = 7
    GET_DEST = 8
    NEW_DAEMON = 9
    DEL_DAEMON = 10
    GET_DAEMON = 11
    SET_CONFIG = 12
    GET_CONFIG = 13
    SET_INFO = 14
    GET_INFO = 15
    ZERO = 16
    FLUSH = 17


class CmdAttr(enum.IntEnum):
    """Top-level attributes of an IPVS request or reply (``IPVS_CMD_ATTR_*``)."""

    SERVICE = 1
    DEST = 2
    DAEMON = 3
    TIMEOUT_TCP = 4
    TIMEOUT_TCP_FIN = 5
    TIMEOUT_UDP = 6


class SvcAttr(enum.IntEnum):
    AF = 1
    PROTOCOL = 2
    ADDR = 3
    PORT = 4
    FWMARK = 5
    SCHED_NAME = 6
    FLAGS = 7
    TIMEOUT = 8
    NETMASK = 9
    STATS = 10
    PE_NAME = 11
    STATS64 = 12


class DestAttr(enum.IntEnum):
    ADDR = 1
    PORT = 2
    FWD_METHOD = 3
    WEIGHT = 4
    U_THRESH = 5
    L_THRESH = 6
    ACTIVE_CONNS = 7
    INACT_CONNS = 8
    PERSIST_CONNS = 9
    STATS = 10
    ADDR_FAMILY = 11
    STATS64 = 12
    TUN_TYPE = 13
    TUN_PORT = 14
    TUN_FLAGS = 15


class InfoAttr(enum.IntEnum):
    """Top-level attributes of a GET_INFO reply: their numbers overlap ``CmdAttr``'s."""

    VERSION = 1
    CONN_TAB_SIZE = 2


class StatsAttr(enum.IntEnum):
    """``IPVS_STATS_ATTR_*``: the counters of a STATS64 nest, in the kernel's order."""

    CONNS = 1
    INPKTS = 2
    OUTPKTS = 3
    INBYTES = 4
    OUTBYTES = 5
    CPS = 6
    INPPS = 7
    OUTPPS = 8
    INBPS = 9
    OUTBPS = 10
    PAD = 11  # alignment filler some architectures put before a u64


class DaemonAttr(enum.IntEnum):
    """``IPVS_DAEMON_ATTR_*``: the nest of NEW/DEL/GET_DAEMON (the connection-sync threads)."""

    STATE = 1  # u32: IP_VS_STATE_MASTER or IP_VS_STATE_BACKUP
    MCAST_IFN = 2  # the interface name, NUL-terminated
    SYNC_ID = 3  # u32 on netlink, a u8 in the sync messages
    SYNC_MAXLEN = 4  # u16 (Linux 4.3+, as the four below)
    MCAST_GROUP = 5  # struct in_addr
    MCAST_GROUP6 = 6  # struct in6_addr
    MCAST_PORT = 7  # u16
    MCAST_TTL = 8  # u8


IP_VS_STATE_MASTER = 1
IP_VS_STATE_BACKUP = 2
IP_VS_IFNAME_MAXLEN = 16  # the NUL included
