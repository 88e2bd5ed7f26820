"""Random hex ids for jobs and requests."""
from __future__ import annotations

import os
import random

_IDS = random.Random(os.urandom(16))  # seeded once: a new id costs no system call


def new_id(hex_chars: int = 12) -> str:
    """A random hex id (request, job): unique enough for keys, not a secret."""
    return f"{_IDS.getrandbits(4 * hex_chars):0{hex_chars}x}"
