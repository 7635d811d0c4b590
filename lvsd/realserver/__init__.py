"""``lvsd realserver apply|check|remove``: the set-up a direct-routing or tunnelling real
server needs to accept a VIP's traffic and stay silent about the VIP on the wire.

- ``plan`` (pure): the pieces wanted for VIPs and a mode, which of them a host lacks, the
  command that fixes each, and the record of what an apply changed (so remove undoes exactly
  that).
- ``persist`` (pure rendering): the sysctl.d file and the systemd oneshot unit of ``--persist``.
- ``host``: the only I/O — pyroute2 (IPRoute) for links and addresses, /proc/sys for sysctls.
"""
