"""nocturna-infra: blue/green deployments of one HTTP service on Docker hosts behind Nginx.

The package in three parts, plus what they share:

    settings/, slot.py, provider_form.py, cli.py   typed, validated stack config; shared words
    program/     the Pulumi program: `stack.main` declares the stack from pure rules
                 (`deployment`, `record`) and pure rendering (`render`) through thin
                 components (`components/`)
    traffic/     the tools that move traffic on the host, run by the Router or by hand:
                 the no-reload switch, probes, upstream file and selection, release gates
    status/      `python -m nocturna_infra.status`: what runs and where Nginx routes

Dependencies point one way: settings -> program.render -> program.components ->
program.stack; traffic and status never import the Pulumi engine.
"""
