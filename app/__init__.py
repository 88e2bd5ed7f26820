"""Distributed Processing Cluster: a Panel dashboard and JSON API over Dask."""

__version__ = "0.1.0"
