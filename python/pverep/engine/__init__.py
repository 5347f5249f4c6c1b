"""The source-side replication engine: planner (pure), runner (one job), scheduler (pvesr run)."""
