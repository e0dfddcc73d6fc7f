"""Entry point of `python -m nocturna_infra.status`."""

import sys

from nocturna_infra.status.cli import main

sys.exit(main())
