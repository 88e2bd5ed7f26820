"""The dataset registry: register, upload, inspect, partition and delete datasets.

Schema inference and every file operation run in the service's executor, never on
the server loop. Managed files live under the data dir with names the service
chooses; a user's own source files are never written or deleted.
"""
from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
import uuid
from concurrent.futures import Executor
from pathlib import Path
from typing import Any, Callable, Iterable

from . import readers, sources
from .errors import Conflict, InvalidRequest, NotFound, ProcessingError, Unprocessable
from .settings import Settings
from .store import Store, utcnow

log = logging.getLogger(__name__)

DEMO_ID = "demo_expression"
RESERVED_IDS = {"upload"}  # /datasets/upload is a route, so a dataset by that id could not be shown
UPLOAD_SUFFIXES = {".csv": "csv", ".tsv": "csv", ".parquet": "parquet", ".pq": "parquet",
                   ".json": "json", ".jsonl": "json", ".ndjson": "json"}


def public(ds: dict[str, Any]) -> dict[str, Any]:
    """The API view of a registry row."""
    return {
        "dataset_id": ds["dataset_id"], "name": ds["name"], "description": ds.get("description") or "",
        "source": ds["source"], "format": ds["format"], "options": ds.get("options") or {},
        "schema": ds.get("schema") or [], "columns": [c["name"] for c in ds.get("schema") or []],
        "file_count": ds.get("file_count"), "size_bytes": ds.get("size_bytes"),
        "estimated_rows": ds.get("estimated_rows"), "created_at": ds.get("created_at"),
        "managed": bool(ds.get("managed")), "partitioned": ds.get("partitions"),
        "origin_job_id": ds.get("origin_job_id"),
    }


class DatasetRegistry:
    """Datasets in the store, files on disk; slow work in ``executor``."""

    def __init__(self, settings: Settings, store: Store, executor: Executor):
        self.settings = settings
        self.store = store
        self.executor = executor
        self.managed_root = settings.data_dir / "managed"
        self._reserved: set[str] = set()  # ids being registered right now
        self._retired: set[str] = set()  # replaced partitioned copies, removed once no job reads them
        self._created_at = time.time()  # uploads begun before this were cut off by a crash

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    # -- reading the registry ---------------------------------------------
    def get(self, dataset_id: str) -> dict[str, Any]:
        ds = self.store.get_dataset(dataset_id)
        if ds is None:
            raise NotFound(f"no dataset '{dataset_id}'; list them at GET /api/processing/datasets",
                           {"dataset_id": dataset_id}, code="dataset_not_found")
        return ds

    def list(self, limit: int, offset: int) -> tuple[int, list[dict[str, Any]]]:
        total, rows = self.store.list_datasets(limit, offset)
        return total, [public(r) for r in rows]

    async def detail(self, dataset_id: str, preview_rows: int = 20) -> dict[str, Any]:
        ds = self.get(dataset_id)
        out = public(ds)
        out["preview"] = []
        if preview_rows:
            source, fmt, options = self.read_source(ds)
            out["preview"] = await self._run(readers.preview, source, fmt, options, preview_rows)
        return out

    def schema(self, ds: dict[str, Any]) -> dict[str, str]:
        """Column name → dtype, as operations validate against."""
        return {c["name"]: c["dtype"] for c in ds.get("schema") or []}

    def read_source(self, ds: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
        """Where jobs read a dataset: its partitioned copy when there is one."""
        parts = ds.get("partitions")
        if parts and parts.get("path"):
            return parts["path"], "parquet", {}
        return ds["source"], ds["format"], ds.get("options") or {}

    # -- registering -------------------------------------------------------
    def check_id_free(self, dataset_id: str | None) -> None:
        """Conflict when ``dataset_id`` is taken or reserved (None is always free)."""
        if dataset_id is None:
            return
        if dataset_id in RESERVED_IDS:
            raise InvalidRequest(f"'{dataset_id}' is a reserved word; choose another dataset_id",
                                 {"field": "dataset_id"})
        if dataset_id in self._reserved or self.store.get_dataset(dataset_id) is not None:
            raise Conflict(f"dataset '{dataset_id}' already exists; choose another id or delete it first",
                           {"dataset_id": dataset_id}, code="dataset_exists")

    def _claim_id(self, dataset_id: str | None, hint: str) -> str:
        if dataset_id is None:
            stem = "".join(ch if ch.isalnum() else "_" for ch in hint.lower())[:40].strip("_") or "dataset"
            dataset_id = f"{stem}_{uuid.uuid4().hex[:6]}"
        self.check_id_free(dataset_id)
        self._reserved.add(dataset_id)
        return dataset_id

    async def register(self, source: str, dataset_id: str | None = None, name: str | None = None,
                       description: str = "", fmt: str | None = None, options: dict[str, Any] | None = None,
                       managed: bool = False, origin_job_id: str | None = None) -> dict[str, Any]:
        """Check the path, read the schema (in the executor), then record the dataset."""
        if not source.strip():
            raise InvalidRequest("'source' must name a path, glob or URL", {"field": "source"})
        sources.check_length(source)  # before the id is derived from it
        dataset_id = self._claim_id(dataset_id, Path(source.rstrip("/*")).stem or "dataset")
        try:
            return await self._register_claimed(source, dataset_id, name, description, fmt, options or {},
                                                managed, origin_job_id)
        finally:
            self._reserved.discard(dataset_id)

    async def _register_claimed(self, source: str, dataset_id: str, name: str | None, description: str,
                                fmt: str | None, options: dict[str, Any], managed: bool,
                                origin_job_id: str | None) -> dict[str, Any]:
        info = await self._run(self._inspect, source, fmt, options, managed)
        self.store.insert_dataset({
            "dataset_id": dataset_id, "name": name or dataset_id, "description": description,
            "source": info["source"], "format": info["format"], "options": options,
            "schema": info["schema"], "files": info["files"][:1000], "file_count": info["file_count"],
            "size_bytes": info["size_bytes"], "estimated_rows": info["estimated_rows"],
            "managed": int(managed), "created_at": utcnow(), "partitions": None,
            "origin_job_id": origin_job_id,
        })
        return public(self.get(dataset_id))

    def _inspect(self, source: str, fmt: str | None, options: dict[str, Any], managed: bool) -> dict[str, Any]:
        policy = sources.RemotePolicy(tuple(p.lower() for p in self.settings.remote_protocols),
                                      self.settings.remote_allow_private)
        # a user's source may not reach into managed/: those files move and vanish under the service
        excluded = () if managed else (self.managed_root,)
        resolved = sources.resolve_source(source, self.settings.allowed_roots, policy, excluded)
        try:
            fmt = readers.detect_format(resolved, fmt)
            info = readers.inspect(resolved, fmt, options, allow_empty=managed)  # a job may write zero rows
        except ProcessingError:
            raise
        except Exception as exc:
            if not sources.is_url(resolved):
                raise
            # Remote backends raise their own exception types (connection, auth, protocol):
            # the user gave a URL the server could not read, which is a 422, not a crash.
            raise Unprocessable(f"could not read {sources.shorten(repr(source))}: {type(exc).__name__}: "
                                f"{sources.shorten(str(exc), 1000)}", {"source": sources.shorten(source)}) from None
        info["source"] = resolved
        return info

    # -- uploads -------------------------------------------------------------
    @property
    def incoming_dir(self) -> Path:
        """Where uploads are streamed before they are complete."""
        return self.managed_root / "uploads" / ".incoming"

    def upload_target(self, filename: str) -> tuple[Path, str]:
        """A fresh temp path for an upload and the format its extension names."""
        suffix = "".join(Path(filename).suffixes[-1:]).lower()
        if suffix not in UPLOAD_SUFFIXES:
            raise InvalidRequest(f"cannot upload {sources.shorten(repr(filename))}: the extension must be one of "
                                 f"{', '.join(sorted(UPLOAD_SUFFIXES))}", {"field": "filename"})
        tmp_dir = self.incoming_dir
        tmp_dir.mkdir(parents=True, exist_ok=True)
        return tmp_dir / f"{uuid.uuid4().hex}{suffix}", UPLOAD_SUFFIXES[suffix]

    async def adopt_upload(self, tmp: Path, filename: str, dataset_id: str | None, name: str | None,
                           description: str, options: dict[str, Any]) -> dict[str, Any]:
        """Move a complete upload into place (atomic rename) and register it."""
        # the id stays claimed until the row exists: a second upload with the same id
        # must not replace (or, failing, delete) this one's folder
        dataset_id = self._claim_id(dataset_id, name or Path(filename).stem or "upload")
        final_dir = self.managed_root / "uploads" / dataset_id
        try:
            final = final_dir / f"data{tmp.suffix}"
            await self._run(_move, tmp, final)
            return await self._register_claimed(str(final), dataset_id, name, description, None, options,
                                                True, None)
        except Exception:
            await self._run(shutil.rmtree, final_dir, True)
            raise
        finally:
            self._reserved.discard(dataset_id)

    async def clean_incoming(self) -> list[str]:
        """Remove partial uploads a killed server left behind; returns their names."""
        return await self._run(self._remove_stale_incoming)

    def _remove_stale_incoming(self) -> list[str]:
        removed = []
        try:
            entries = list(os.scandir(self.incoming_dir))
        except FileNotFoundError:
            return removed
        for entry in entries:
            try:
                # an upload that started since this process began is live: leave it
                if entry.stat(follow_symlinks=False).st_mtime >= self._created_at:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)
            except FileNotFoundError:
                continue
            removed.append(entry.name)
        if removed:
            log.info("removed %d partial upload(s) left by an earlier run", len(removed))
        return removed

    # -- deleting --------------------------------------------------------------
    async def delete(self, dataset_id: str, busy: bool) -> dict[str, Any]:
        """Forget a dataset and remove only the files the service manages."""
        ds = self.get(dataset_id)
        if busy:
            raise Conflict(f"dataset '{dataset_id}' is used by pending or running jobs; cancel them first",
                           code="dataset_in_use")
        self.store.delete_dataset(dataset_id)
        removed = await self._run(self._remove_managed_files, ds)
        return {"message": f"Dataset '{dataset_id}' deleted", "dataset_id": dataset_id, "removed_paths": removed}

    def _remove_managed_files(self, ds: dict[str, Any]) -> list[str]:
        removed = []
        # the whole folder of partitioned copies, including ones a failed job left behind
        candidates = [(ds.get("partitions") or {}).get("path"), str(self.partitions_root(ds["dataset_id"]))]
        if ds.get("managed"):
            candidates.append(str(Path(ds["source"]).parent) if Path(ds["source"]).is_file() else ds["source"])
        root = self.managed_root.resolve()
        for path in filter(None, candidates):
            real = Path(path).resolve()
            if root not in real.parents or not real.exists():  # only ever delete inside the managed tree
                continue
            shutil.rmtree(real, ignore_errors=True)
            removed.append(str(real.relative_to(self.settings.data_dir.resolve())))
        return removed

    # -- partitioned copies ------------------------------------------------------
    def partitions_root(self, dataset_id: str) -> Path:
        """Where partition jobs write the dataset's copies (``<root>/<job_id>``)."""
        return self.managed_root / "partitions" / dataset_id

    def set_partitions(self, dataset_id: str, info: dict[str, Any], in_use: Iterable[str] = ()) -> None:
        """Point the dataset at its new partitioned copy; retire the previous copy.

        New jobs read the new copy at once. The previous copy is removed as soon as no
        running attempt reads it (``in_use``: the paths running attempts read), so a job
        that started on it finishes on it.
        """
        ds = self.get(dataset_id)
        old = (ds.get("partitions") or {}).get("path")
        self.store.update_dataset(dataset_id, partitions=info)
        if old and old != info.get("path") and self.managed_root.resolve() in Path(old).resolve().parents:
            self._retired.add(old)
        self.release_retired(in_use)

    def release_retired(self, in_use: Iterable[str]) -> list[str]:
        """Remove retired copies that no running attempt reads; returns the paths removed."""
        busy = set(in_use)
        done = [path for path in self._retired if path not in busy]
        for path in done:
            self._retired.discard(path)
            self.executor.submit(shutil.rmtree, path, True)  # called on the loop: never wait for the disk
        return done

    # -- demo --------------------------------------------------------------------
    async def ensure_demo(self) -> None:
        """Generate and register ``demo_expression`` once (first start)."""
        if not self.settings.demo_dataset or self.store.get_dataset(DEMO_ID) is not None:
            return
        out = self.managed_root / "demo" / DEMO_ID
        await self._run(_write_demo, out, self.settings.demo_rows)
        try:
            await self.register(str(out), DEMO_ID, "Demo gene expression",
                                "Synthetic expression table (seed 42): gene_id, sample_id, condition, "
                                "expression_level, p_value; GENE00001–GENE00050 are differentially expressed.",
                                "parquet", managed=True)
        except Conflict:
            pass  # registered concurrently


def _move(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    src.replace(dst)


def _write_demo(out: Path, rows: int) -> None:
    from .demo import generate_expression, write_dataset

    if out.exists():
        shutil.rmtree(out)
    n_files = max(1, min(8, rows // 100_000))
    write_dataset(generate_expression(rows), out, "parquet", n_files=n_files)

