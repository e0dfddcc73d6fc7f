"""`python -m nocturna_infra.switch`: the command the router runs and operators type by hand
(break glass). The switch itself lives in `nocturna_infra.traffic.switch`."""

from __future__ import annotations

import sys

from nocturna_infra.traffic.switch import main

if __name__ == "__main__":
    sys.exit(main())
