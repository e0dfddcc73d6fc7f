"""nocturna-infra: blue/green deployments of one HTTP service on a Docker host behind Nginx.

Resource tree of one stack (production; staging has a single `staging` slot)::

    nocturna:index:ServiceNetwork   the user-defined bridge network the slots join
    nocturna:index:ServiceImage     docker.Image built with BuildKit, kept local (skip_push)
    nocturna:index:SlotContainer    one per slot: blue, green (or staging)
    nocturna:index:Router           command.local.Command running the health-gated switch:
                                    probe target -> write upstream -> nginx -t -> reload -> verify

Layers, dependencies pointing one way: settings -> render -> components -> program.
`settings` and `render` never import the Pulumi engine's resources, so they are tested
without mocks; `switch` is the standalone program the Router runs on the host.
"""
