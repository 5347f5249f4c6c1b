"""Storage plugins (only zfspool replicates)."""
