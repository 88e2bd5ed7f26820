"""The ``processing`` command moved to :mod:`processing_client.cli` (``pip install ./client``).

``app.cli`` stays an alias of ``processing_client.cli`` for scripts written against it.
"""
import sys

import processing_client.cli

if __name__ == "__main__":  # python -m app.cli, as before the move
    sys.exit(processing_client.cli.main())
sys.modules[__name__] = processing_client.cli  # the same module object, not a copy of its names
