"""The pages: functions called once per browser session (URL → function in ``PAGES``),
in the page-build thread (``components.page_app``), not on the event loop.

Each analyst page makes one ``LiveFeed`` (the session's only periodic callback)
and hands it to its components; the wall makes its own.
"""
from __future__ import annotations

from typing import Any

import panel as pn

from app.errors import ProcessingError
from app.runtime import get_service

from .activity import QueueSummary, RunningJobs
from .banner import HealthBanner
from .charts import TimeSeriesChart
from .cluster import ClusterCards, ClusterControls, ClusterEvents, WorkerTable
from .data import DatasetDetail, RegisterForm, UploadForm
from .dataset_list import DatasetTable
from .job_extras import clone_values
from .job_detail import JobDetail
from .jobs import JobTable
from .live import LiveFeed, LiveSource
from .monitoring import MonitoringCharts
from .page_app import Application, page_application
from .pipelines import PipelineView
from .submit import SubmitForm
from .theme import ACCENT, CSS, SERIES_COLORS, SYSTEM_FONT, drop_font_cdn, esc
from .wall import Wall

drop_font_cdn()
pn.extension("tabulator", notifications=True, design="fast",
             disconnect_notification="Connection to the server lost: reload the page once it is back.")

TITLE = "Distributed Processing Cluster"
NAV = (("./", "Overview"), ("./cluster", "Cluster"), ("./jobs", "Jobs"), ("./data", "Data"),
       ("./monitoring", "Monitoring"), ("./pipelines", "Pipelines"))


def navigation(active: str) -> pn.pane.HTML:
    links = "".join(f"<a href='{href}' class='{'active' if label == active else ''}' "
                    f"data-testid='nav-{label.lower()}'>{label}</a>" for href, label in NAV)
    extra = ("<hr><a href='./wall' target='_blank' data-testid='nav-wall'>Wall ↗</a>"
             "<a href='./docs' target='_blank'>API docs ↗</a>")
    if get_service().settings.api_token:  # pages behind the sign-in form
        extra += "<a href='./logout' data-testid='nav-logout'>Sign out</a>"
    return pn.pane.HTML(f"<nav class='pc-nav'>{links}{extra}</nav>", stylesheets=[CSS], sizing_mode="stretch_width")


def analyst_page(active: str, *main: Any, feed: LiveFeed | None = None) -> pn.template.FastListTemplate:
    """The analyst template: sidebar navigation, the health banner and the page's cards."""
    banner = HealthBanner(service=get_service(), feed=feed)
    return pn.template.FastListTemplate(
        title=TITLE, sidebar=[navigation(active)], main=[banner, *main], accent=ACCENT, main_layout=None,
        sidebar_width=200, header_background=ACCENT, font=SYSTEM_FONT, font_url="",
    )


def card(body: Any, title: str, **kw: Any) -> pn.Card:
    options = {"sizing_mode": "stretch_width", "collapsible": False, "margin": (8, 8), **kw}
    return pn.Card(body, title=title, **options)


def query_arg(name: str) -> str | None:
    values = pn.state.session_args.get(name) if pn.state.session_args else None
    return values[0].decode() if values else None


def resource_charts(live: LiveSource, height: int = 200) -> tuple[TimeSeriesChart, TimeSeriesChart]:
    memory = TimeSeriesChart(live=live, lines=[("mem_used", "Used", SERIES_COLORS["memory"]),
                                               ("mem_total", "Limit", "#adb5bd")], fill=True, unit="GB", height=height)
    cpu = TimeSeriesChart(live=live, lines=[("cpu", "CPU", SERIES_COLORS["cpu"])], fill=True, y_max=100, unit="%",
                          height=height)
    return memory, cpu


def overview_page() -> pn.template.FastListTemplate:
    """/ — the cluster at a glance: status, controls, running jobs, the queue, resources."""
    service = get_service()
    feed = LiveFeed(service=service)
    memory, cpu = resource_charts(LiveSource(feed, window_s=600))
    return analyst_page(
        "Overview",
        pn.Row(card(ClusterCards(service=service, feed=feed), "Cluster"),
               card(ClusterControls(service=service, feed=feed), "Controls"), sizing_mode="stretch_width"),
        pn.Row(card(RunningJobs(service=service, feed=feed), "Running jobs"),
               card(QueueSummary(service=service, feed=feed), "Queue by priority"), sizing_mode="stretch_width"),
        pn.Row(card(memory, "Memory (GB), last 10 min"), card(cpu, "CPU (%), last 10 min"), sizing_mode="stretch_width"),
        feed=feed,
    )


def cluster_page() -> pn.template.FastListTemplate:
    """/cluster — start, stop and scale; workers; events; the Dask dashboard."""
    service = get_service()
    feed = LiveFeed(service=service)
    url = service.cluster_status().get("dashboard_url")
    link = (f"<a class='pc-linkbutton' href='{esc(url)}' target='_blank' data-testid='dask-dashboard'>"
            f"Open the Dask dashboard ↗</a>" if url else
            "<span class='pc-muted'>The Dask dashboard is linked here once the cluster runs.</span>")
    return analyst_page(
        "Cluster",
        pn.Row(card(ClusterCards(service=service, feed=feed), "Status"),
               card(pn.Column(ClusterControls(service=service, feed=feed),
                              pn.pane.HTML(link, stylesheets=[CSS], margin=(12, 10))), "Start, stop and scale"),
               sizing_mode="stretch_width"),
        card(WorkerTable(service=service, feed=feed), "Workers"),
        card(ClusterEvents(service=service, feed=feed), "Cluster events"),
        feed=feed,
    )


def jobs_page() -> pn.template.FastListTemplate:
    """/jobs — submit, follow and cancel jobs; ``?job=ID`` opens one, ``?dataset=ID`` preselects a dataset."""
    service = get_service()
    feed = LiveFeed(service=service)
    form = SubmitForm(service=service, dataset_id=query_arg("dataset"))
    clone = query_arg("clone")
    if clone:
        async def prefill_clone() -> None:
            """The job to clone, read on the store's read pool once the page is up."""
            try:
                job = await service.reading(service.jobs.get, clone)
            except ProcessingError:
                return  # an unknown job: the form keeps its defaults
            await form.prefill({**clone_values(job), "job_id": clone})

        pn.state.execute(prefill_clone)
    table = JobTable(service=service, feed=feed)
    detail = JobDetail(service=service, feed=feed, job_id=query_arg("job"))

    def open_job(job_id: str | None) -> None:
        detail.show(job_id)
        if job_id and pn.state.location is not None:
            pn.state.location.update_query(job=job_id)

    form.param.watch(lambda e: (table.reload(), open_job(e.new)), "submitted")
    table.param.watch(lambda e: open_job(e.new), "selected")
    return analyst_page(
        "Jobs",
        pn.Row(card(form, "Submit a job", width=470, sizing_mode="fixed"), card(detail, "Job"),
               sizing_mode="stretch_width"),
        card(table, "Jobs"),
        feed=feed,
    )


def data_page() -> pn.template.FastListTemplate:
    """/data — register, upload, browse and partition datasets; ``?dataset=ID`` opens one."""
    service = get_service()
    register, upload = RegisterForm(service=service), UploadForm(service=service)
    table = DatasetTable(service=service)
    detail = DatasetDetail(service=service, dataset_id=query_arg("dataset"))

    def open_dataset(dataset_id: str | None) -> None:
        detail.dataset_id = dataset_id
        if dataset_id and pn.state.location is not None:
            pn.state.location.update_query(dataset=dataset_id)

    for form in (register, upload):
        form.param.watch(lambda e: (pn.state.execute(table.refresh), open_dataset(e.new)), "registered")
    table.param.watch(lambda e: open_dataset(e.new), "selected")
    detail.partition.param.watch(lambda _e: pn.state.execute(table.refresh), "finished")
    return analyst_page(
        "Data",
        # the list and the open dataset (with its partition form) first: they must be in view at 1080 px
        card(table, "Datasets"),
        card(detail, "Dataset"),
        pn.Row(card(upload, "Upload a file"), card(register, "Register by path"), sizing_mode="stretch_width"),
    )


def monitoring_page() -> pn.template.FastListTemplate:
    """/monitoring — live metrics over 5 min, 1 h or 24 h, the queue and completed jobs."""
    service = get_service()
    feed = LiveFeed(service=service)
    return analyst_page("Monitoring", MonitoringCharts(service=service, feed=feed), feed=feed)


def pipelines_page() -> pn.template.FastListTemplate:
    """/pipelines — a pipeline's steps as a graph with live states (``?id=pipe_…``)."""
    service = get_service()
    feed = LiveFeed(service=service)
    view = PipelineView(service=service, feed=feed, pipeline_id=query_arg("id"))
    return analyst_page("Pipelines", card(view, "Pipeline"), feed=feed)


def wall_page() -> pn.viewable.Viewable:
    """/wall — the kiosk view (``?panels=…``, ``?rotate=N``)."""
    rotate = query_arg("rotate")
    try:
        seconds = max(2.0, float(rotate)) if rotate else None
    except ValueError:
        seconds = None
    return Wall(service=get_service(), panels=query_arg("panels"), rotate=seconds)


PAGES = {"/": overview_page, "/cluster": cluster_page, "/jobs": jobs_page, "/data": data_page,
         "/monitoring": monitoring_page, "/pipelines": pipelines_page, "/wall": wall_page}


def applications(title: str) -> dict[str, Application]:
    """What ``pn.serve`` serves: each page as an application that builds it off the event loop."""
    return {path: page_application(page, title) for path, page in PAGES.items()}
