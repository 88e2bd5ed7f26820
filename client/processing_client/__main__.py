"""``python -m processing_client ARGS`` runs the ``processing`` command."""
import sys

from .cli import main

sys.exit(main())
