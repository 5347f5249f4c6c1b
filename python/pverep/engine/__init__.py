"""Replication logic: planner (pure), runner (one job), scheduler (pvesr run), and the target side (remote)."""
