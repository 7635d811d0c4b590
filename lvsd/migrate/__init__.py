"""Importers: an existing setup (ipvsadm-save output, keepalived.conf) as an lvsd config."""
