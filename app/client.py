"""The Python client moved to :mod:`processing_client` (it installs alone: ``pip install ./client``).

``app.client`` stays an alias of ``processing_client.client`` for scripts written against it.
"""
import sys

import processing_client.client

sys.modules[__name__] = processing_client.client  # the same module object, not a copy of its names
