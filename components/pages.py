"""The pages: functions Panel calls once per browser session."""
from __future__ import annotations

import panel as pn

from app.runtime import get_service

from .cluster import ClusterCards, ClusterControls

pn.extension("tabulator", notifications=True, design="material")


def overview_page() -> pn.template.FastListTemplate:
    """/ — the cluster at a glance, with its controls."""
    service = get_service()
    cards = ClusterCards(service=service)
    controls = ClusterControls(service=service)
    template = pn.template.FastListTemplate(
        title="Distributed Processing Cluster",
        main=[pn.Row(pn.Card(cards, title="Cluster", sizing_mode="stretch_width"),
                     pn.Card(controls, title="Controls", sizing_mode="stretch_width"))],
        sidebar=[pn.pane.Markdown("[API docs](/docs)")],
        accent="#1c7ed6",
    )
    return template


PAGES = {"/": overview_page}
