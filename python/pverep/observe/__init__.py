"""Seeing replication: metrics, history, health, the HTML report (issue 15).

Each module owns one thing: ``jobview`` (what one job looks like to an observer, pure),
``metrics`` (Prometheus text exposition, pure), ``textfile`` (node_exporter's collector file),
``exporter`` (the HTTP endpoint), ``history`` (the bounded run log), ``tally`` (what one run did,
from its job log), ``health`` (Nagios-style verdicts, pure), ``report`` (the HTML page, pure),
``settings`` (the ``[observe]`` section of pverep.conf), ``collect`` (gathers it all on a node).
"""
