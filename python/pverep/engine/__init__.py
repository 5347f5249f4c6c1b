"""Replication logic: planner (pure), runner, scheduler (pvesr run), target side (remote)."""
