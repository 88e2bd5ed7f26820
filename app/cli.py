"""The ``processing`` command moved to :mod:`processing_client.cli` (``pip install ./client``).

``app.cli`` stays an alias of ``processing_client.cli`` for scripts written against it.
"""
import sys

import processing_client.cli

sys.modules[__name__] = processing_client.cli  # the same module object, not a copy of its names
