"""Moving traffic between slots: the switch (its options, orchestration and file transaction),
the HTTP checks it relies on, the upstream file with one group per slot, the selection files
Nginx tests, and the symlink-safe file writes they share. The Pulumi program only runs the
switch (router.py) and reads the selection back (program.routed_slot, status)."""
