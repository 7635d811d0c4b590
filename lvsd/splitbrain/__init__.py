"""Split-brain detection: a director holding a VIP probes its segment for another holder."""
