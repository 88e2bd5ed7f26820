"""The catalogue of job operations: one module per operation, registered by name.

Handlers, pages and the engine list and look up operations here; the runner only runs them.
"""
from __future__ import annotations

from typing import Any

from ..errors import InvalidRequest
from . import (
    aggregate,
    correlation,
    describe,
    differential_expression,
    filter,
    histogram,
    partition,
    sort_top,
    sql,
    transform,
    validate,
    value_counts,
)
from .base import Operation, Schema

_MODULES = (
    aggregate,
    correlation,
    describe,
    differential_expression,
    filter,
    histogram,
    partition,
    sort_top,
    sql,
    transform,
    validate,
    value_counts,
)

REGISTRY: dict[str, Operation] = {m.OPERATION.name: m.OPERATION for m in _MODULES}


def get(name: str) -> Operation:
    """The operation called ``name``; raises ``InvalidRequest`` listing the available ones."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        names = sorted(REGISTRY)
        raise InvalidRequest(
            f"unknown operation '{name}'; available: {', '.join(names)}", {"operations": names}
        ) from None


def catalogue() -> list[dict[str, Any]]:
    """Every operation's name, labels, result kind and parameter schema, by name."""
    return [REGISTRY[name].entry() for name in sorted(REGISTRY)]


__all__ = ["REGISTRY", "Operation", "Schema", "catalogue", "get"]
