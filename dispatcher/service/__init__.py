"""The composition root: the daemon, the fleet, reload; the only importer of the simulator."""
