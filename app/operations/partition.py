"""Rewrite a dataset as balanced Parquet partitions: the datasets' managed copy.

Its catalogue entry and parameters live here with the other operations; the runner
writes the partitions itself (``app.partition``), since the output is files, not a graph.
"""
from __future__ import annotations

import copy

import param

from ..models import PartitionRequest, public_params
from .base import Operation


class PartitionParams(param.Parameterized):
    """Partition parameters: n_partitions wins over partition_size_mb."""

    # copies: a Parameter assigned to a second class is re-owned by it, which renamed
    # PartitionRequest's validation messages to 'PartitionParams.…'
    partition_size_mb = copy.copy(public_params(PartitionRequest)["partition_size_mb"])
    n_partitions = copy.copy(public_params(PartitionRequest)["n_partitions"])


class PartitionOperation(Operation):
    """Rewrite a dataset as balanced, compressed Parquet partitions (the datasets' copy)."""

    name = "partition"
    title = "Partition dataset"
    description = "Rewrite the dataset as balanced Parquet partitions that later jobs read."
    Params = PartitionParams
    result_kind = "record"


OPERATION = PartitionOperation()
