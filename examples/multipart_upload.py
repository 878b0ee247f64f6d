"""Multipart uploads, as in the reference documentation: many parts per bucket, one "complete".

Each upload is a parent task whose ``execute`` spawns one child per part, in a group per bucket
(at most ``PARTS_PER_BUCKET`` parts of one bucket upload at once); its ``finalize`` runs once
every part has finished and "completes" the multipart upload. The object store is simulated
(``FakeObjectStore``, shared app state); everything else — the database, the actors, the ZeroMQ
sockets — is real.

    python -m examples.multipart_upload            # run it embedded
    app()                                          # the SchedulerBuilder, for the Procfile
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from taskmill import (
    Priority,
    Scheduler,
    SchedulerBuilder,
    TaskContext,
    TaskError,
    TaskExecutor,
    TaskSubmission,
    TypedTask,
)

PARTS_PER_BUCKET = 2
SECONDS_PER_MB = 0.01


@dataclass
class Part:
    etag: str
    number: int
    size: int


@dataclass
class MultipartUpload(TypedTask):
    TASK_TYPE: ClassVar[str] = "multipart-upload"
    bucket: str
    key: str
    parts: list[Part]

    def priority(self) -> Priority:
        return Priority.NORMAL

    def label(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


@dataclass
class FakeObjectStore:
    """Stands in for S3: parts and completed objects are files under ``root``, so executor
    hosts in several processes (``honcho start -c worker=3``) share one "bucket" store.

    ``peak`` counts parts uploading at once per bucket, in this process.
    """

    root: Path
    in_flight: dict[str, int] = field(default_factory=dict)
    peak: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def begin(self, bucket: str) -> None:
        with self.lock:
            self.in_flight[bucket] = self.in_flight.get(bucket, 0) + 1
            self.peak[bucket] = max(self.peak.get(bucket, 0), self.in_flight[bucket])

    def put_part(self, bucket: str, key: str, number: int) -> None:
        with self.lock:
            self.in_flight[bucket] -= 1
        folder = self.root / bucket / key
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"part-{number}").touch()

    def complete(self, bucket: str, key: str, numbers: list[int]) -> None:
        folder = self.root / bucket / key
        uploaded = sorted(int(p.name[5:]) for p in folder.glob("part-*"))
        if uploaded != sorted(numbers):
            raise TaskError(f"parts missing for {bucket}/{key}: have {uploaded}")
        (folder / "COMPLETED").touch()

    @property
    def completed(self) -> dict[str, list[int]]:
        """Completed objects and their parts, read back from the files."""
        return {
            f"{done.parent.parent.name}/{done.parent.name}": sorted(
                int(p.name[5:]) for p in done.parent.glob("part-*")
            )
            for done in self.root.glob("*/*/COMPLETED")
        }


class MultipartUploadExecutor(TaskExecutor):
    async def execute(self, ctx: TaskContext) -> None:
        upload = ctx.payload(MultipartUpload)
        await ctx.spawn_children(
            [
                TaskSubmission("upload-part", key=part.etag, label=f"{upload.key} #{part.number}")
                .priority(ctx.record.priority)
                .payload_json({"bucket": upload.bucket, "key": upload.key, "part": part})
                .expected_net_io(0, part.size)
                .group(f"s3://{upload.bucket}")
                for part in upload.parts
            ]
        )

    async def finalize(self, ctx: TaskContext) -> None:
        # All parts uploaded — complete the multipart upload.
        upload = ctx.payload(MultipartUpload)
        store = ctx.state(FakeObjectStore)
        if store is None:
            raise TaskError("FakeObjectStore not registered")
        store.complete(upload.bucket, upload.key, [p.number for p in upload.parts])


async def upload_part(ctx: TaskContext) -> None:
    job = ctx.payload()
    part = Part(**job["part"])
    store = ctx.state(FakeObjectStore)
    if store is None:
        raise TaskError("FakeObjectStore not registered")
    store.begin(job["bucket"])
    steps = 4
    for step in range(steps):
        await asyncio.sleep(part.size / 1e6 * SECONDS_PER_MB / steps)
        ctx.progress.report_fraction(step + 1, steps, "uploading")
    ctx.record_net_tx_bytes(part.size)
    store.put_part(job["bucket"], job["key"], part.number)


def app(
    store_path: str | Path = ".taskmill/multipart.db", objects: FakeObjectStore | None = None
) -> SchedulerBuilder:
    """The application description: embedded mode and every Procfile process build from it."""
    return (
        Scheduler.builder()
        .store_path(store_path)
        .typed_executor(MultipartUpload, MultipartUploadExecutor())
        .executor("upload-part", upload_part)
        .max_concurrency(6)
        .default_group_concurrency(PARTS_PER_BUCKET)
        .with_resource_monitoring()  # psutil: `taskmill status` shows CPU, disk and network
        .app_state(objects or FakeObjectStore(Path(".taskmill/objects")))
    )


def sample_uploads() -> list[MultipartUpload]:
    uploads = []
    for bucket, count in (("photos", 3), ("backups", 2)):
        for n in range(count):
            key = f"{bucket}-{n}.bin"
            parts = [Part(f"{key}-etag-{i}", i, 5_000_000 + 1_000_000 * i) for i in range(1, 5)]
            uploads.append(MultipartUpload(bucket, key, parts))
    return uploads


async def run(store_path: Path, objects: FakeObjectStore) -> dict[str, list[int]]:
    """Upload the sample objects embedded; return what the object store completed."""
    scheduler = await app(store_path, objects).build()
    uploads = sample_uploads()
    async with await scheduler.subscribe() as events, scheduler:
        for upload in uploads:
            await scheduler.submit_typed(upload)
        done = 0
        async for event in events:
            if event.type in ("completed", "failed") and getattr(event, "task_type", "") == (
                MultipartUpload.TASK_TYPE
            ):
                done += 1
                print(f"{event.type:>9}  {event.label}", file=sys.stderr)
                if done == len(uploads):
                    break
    return objects.completed


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        objects = FakeObjectStore(Path(tmp) / "objects")
        completed = asyncio.run(run(Path(tmp) / "multipart.db", objects))
    for name, parts in sorted(completed.items()):
        print(f"completed {name}: parts {parts}")
    print(f"peak parts in flight per bucket: {objects.peak} (limit {PARTS_PER_BUCKET})")


if __name__ == "__main__":
    main()
