"""The Python client and the ``processing`` command of the processing cluster's JSON API.

Imports nothing from the server: ``pip install ./client`` installs it with only
``requests`` and ``tqdm``.
"""
from __future__ import annotations

from .client import DEFAULT_URL, PRIORITIES, TERMINAL, Client, Job, ProcessingAPIError

__all__ = ["DEFAULT_URL", "PRIORITIES", "TERMINAL", "Client", "Job", "ProcessingAPIError"]
