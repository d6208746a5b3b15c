"""``python -m roomer serve`` runs the same CLI as the ``roomer`` command."""

import sys

from .cli import main

sys.exit(main())
