"""Write pverep(1) in roff from the CLI's own help texts (the verbs, their usage, options).

Run with the interpreter and the library the package ships, so the page documents exactly
what the package contains: ``python3 -I manpage.py <lib dir> <version> > pverep.1``.
"""

from __future__ import annotations

import sys


def _roff(text: str) -> str:
    """Escape text for roff: backslashes, hyphens, and lines starting with a control char."""
    out = []
    for line in text.replace("\\", "\\e").replace("-", "\\-").splitlines():
        out.append("\\&" + line if line.startswith((".", "'")) else line)
    return "\n".join(out)


def _command_section(ctx: object, name: str, command: object) -> list[str]:
    import click

    assert isinstance(command, click.Command) and isinstance(ctx, click.Context)
    sub = click.Context(command, info_name=name, parent=ctx)
    usage = " ".join(command.collect_usage_pieces(sub))
    lines = [".SS " + _roff(f"pverep {name} {usage}".rstrip()), _roff(command.help or "")]
    for param in command.get_params(sub):
        record = param.get_help_record(sub)
        if record is None:
            continue
        flags, help_text = record
        lines += [".TP", ".B " + _roff(flags), _roff(help_text or "")]
    return lines


def render(version: str) -> str:
    import click

    from pverep.cli import _register, cli

    _register()
    ctx = click.Context(cli, info_name="pverep")
    assert isinstance(cli, click.Group)
    lines = [
        f'.TH PVEREP 1 "" "pverep {version}" "User Commands"',
        ".SH NAME",
        "pverep \\- storage replication for Proxmox VE clusters (pvesr\\-compatible)",
        ".SH SYNOPSIS",
        ".B pverep",
        "[\\fIOPTIONS\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR]...",
        ".SH DESCRIPTION",
        _roff(cli.help or ""),
        ".PP",
        _roff(
            "pverep reads and writes the files pvesr uses (/etc/pve/replication.cfg, "
            "/var/lib/pve-manager/pve-replication-state.json) and takes the same locks "
            "(/var/lock/pvesr.lck, /var/lock/pve-manager/pve-migrate-<vmid>), so it can run "
            "beside pvescheduler. This page is generated from the command's help texts; "
            "'pverep <command> --help' prints the same."
        ),
        ".SH GLOBAL OPTIONS",
    ]
    for param in cli.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is not None:
            lines += [".TP", ".B " + _roff(record[0]), _roff(record[1] or "")]
    lines.append(".SH COMMANDS")
    for name in cli.list_commands(ctx):
        command = cli.get_command(ctx, name)
        if command is None or command.hidden:
            continue
        if isinstance(command, click.Group):
            group_ctx = click.Context(command, info_name=name, parent=ctx)
            for subname in command.list_commands(group_ctx):
                subcommand = command.get_command(group_ctx, subname)
                if subcommand is not None and not subcommand.hidden:
                    lines += _command_section(ctx, f"{name} {subname}", subcommand)
        else:
            lines += _command_section(ctx, name, command)
    lines += [
        ".SH FILES",
        ".TP",
        ".B /etc/pverep/pverep.conf",
        "pverep's own settings on this node, one section per concern.",
        ".TP",
        ".B /etc/default/pverep",
        "environment of the guest hookscript.",
        ".TP",
        ".B /usr/share/pverep/pverep\\-hookscript",
        "the guest hookscript; see \\fBpverep install\\-hookscript\\fR.",
        ".SH SEE ALSO",
        "\\fBpvesr\\fR(1), /usr/share/doc/pverep/README.md",
    ]
    return "\n".join(line for line in lines if line != "") + "\n"


if __name__ == "__main__":
    sys.path.insert(0, sys.argv[1])
    sys.stdout.write(render(sys.argv[2]))
