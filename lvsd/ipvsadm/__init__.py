"""ipvsadm's vocabulary and file formats, pure: no kernel, no third-party library.

- ``names``: every ipvsadm word (options, forwarding switches, tunnel, checksum and scheduler
  flag names, protocol labels) and lvsd's config words for the same things, defined once;
- ``resolve``: host and service-name lookups, injected so the rest stays pure;
- ``order``: the order ``ipvsadm -S`` and ``-L`` print a table in (a signed compare);
- ``save``: a table as ``ipvsadm-save [-n]`` prints it, plus lvsd's lossless extension;
- ``listing``: ``ipvsadm -L[n]`` and its ``--stats``, ``--rate``, ``--exact`` … views;
- ``scan``: ipvsadm-restore's reading of a file into lines, words and options;
- ``restore``: a restore file parsed into a table, and the minimal-diff plan to restore it.
"""
