"""The Pulumi program. Resource tree of one stack (production; staging has one `staging` slot)::

    nocturna:index:ServiceNetwork   the user-defined bridge network the slots join
    nocturna:index:ServiceImage     docker.Image built with BuildKit, kept local (skip_push)
    nocturna:index:SlotContainer    one per slot: blue, green (or staging); frozen ones protected
    nocturna:index:Router           command.local.Command running the gated switch
                                    (nocturna_infra.traffic): probe, smoke, flip, verify, watch

`stack.main` wires them; `deployment` (which slot may change) and `record` (which recorded
arguments may be declared again) are pure rules, `render` pure text and arguments.
"""
