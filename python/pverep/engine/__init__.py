"""Replication logic: planner (pure), runner (one job), scheduler (pvesr run), target side (remote)."""
