"""``python -m sammed`` (also what ``torchrun -m sammed ...`` runs)."""

import sys

from sammed.cli import main

sys.exit(main())
