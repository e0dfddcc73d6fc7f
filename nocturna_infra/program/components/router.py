"""The router: a command that points Nginx at the live slot once its health probes pass.

It re-runs when the live slot changes (the switch flips the selection file, no reload) and
when any slot's servers or the files' places change (the switch rewrites the upstream file,
tests and reloads once)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import pulumi
from pulumi_command import local

SECRET_OUTPUTS: Final = ["stdout", "stderr"]


@dataclass(frozen=True)
class RouterArgs:
    switch_command: pulumi.Input[str]
    """Shell-safe command line of the health-gated switch (render.switch_command)."""
    live_slot: str
    upstream_file: str
    upstream_name: str
    live_server: pulumi.Input[str]
    live_container: pulumi.Input[str]
    """Docker ID of the live slot's container: a new one is routed through the probe again."""
    standby_servers: pulumi.Input[str] = ""
    """`slot=HOST:PORT` of the other slots; a change rewrites the upstream file."""
    selection_dir: str = ""
    environment: pulumi.Input[Mapping[str, pulumi.Input[str]]] | None = None
    """Secret values the smoke checks name as `${VAR}` (the live slot's API key), handed to
    the switch's process, so they are in neither the command line nor the output."""
    directory: str | None = None
    """Where the switch runs: the project, when a smoke check names a body file there."""
    depends_on: Sequence[pulumi.Resource] = ()


class Router(pulumi.ComponentResource):
    """Runs `python -m nocturna_infra.switch` on the machine running Pulumi (the host)."""

    output: pulumi.Output[str]
    """What the switch printed: one line per step and a summary."""

    def __init__(
        self, name: str, args: RouterArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("nocturna:index:Router", name, None, opts)
        switch = local.Command(
            f"{name}-switch",
            create=args.switch_command,
            # No `delete`: destroying or replacing the router must never move traffic.
            triggers=[
                args.live_slot,  # a switch or rollback: flip the selection
                args.live_server,  # a slot's address changed: rewrite the upstream file
                args.standby_servers,
                args.upstream_file,  # the upstream moved: write the new file
                args.upstream_name,
                args.selection_dir,  # the selection moved: write it there
                # The live container was re-created (staging's deploy; production's live
                # slot is protected, so its ID changes only when it is first created).
                args.live_container,
            ],
            environment=args.environment,
            dir=args.directory,
            logging=local.Logging.STDOUT_AND_STDERR,
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=list(args.depends_on),
                # With a key in its environment, what the switch printed is secret by our
                # choice, not by the provider's default (pulumi-command marks outputs secret
                # when an input is, since 0.8.2; pulumi/pulumi-command#256). The switch masks
                # the key itself, but a release may echo it encoded where no mask matches.
                additional_secret_outputs=SECRET_OUTPUTS if args.environment is not None else None,
            ),
        )
        self.output = (
            pulumi.Output.secret(switch.stdout) if args.environment is not None else switch.stdout
        )
        self.register_outputs({"output": self.output})
