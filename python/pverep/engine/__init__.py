"""Replication logic: planner, runner, scheduler, and the target side (remote)."""
