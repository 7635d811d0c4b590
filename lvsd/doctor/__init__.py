"""``lvsd doctor``: what on this director would make IPVS misbehave, each finding with its fix.

Two halves, kept apart so the judgement is testable anywhere:

- ``gather`` reads the host (sysctls, modules, addresses, routes, the IPVS table, firewall
  rules) into one ``Facts`` value; it is the only part doing I/O.
- ``registry.CHECKS`` lists one pure function per check area, ``Facts -> [Finding]``; adding a
  check is one module plus one line there. A check that needs a sysctl not yet gathered adds
  its path to ``gather.SYSCTL_PATHS``.
"""
