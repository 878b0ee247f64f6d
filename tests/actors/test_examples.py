"""The examples run as documented."""

from __future__ import annotations

from pathlib import Path

from examples.multipart_upload import PARTS_PER_BUCKET, FakeObjectStore, run, sample_uploads


async def test_multipart_upload_completes_every_object_within_bucket_limits(
    tmp_path: Path,
) -> None:
    objects = FakeObjectStore(tmp_path / "objects")
    completed = await run(tmp_path / "multipart.db", objects)
    expected = {f"{u.bucket}/{u.key}": [p.number for p in u.parts] for u in sample_uploads()}
    assert completed == expected
    assert max(objects.peak.values()) <= PARTS_PER_BUCKET
    assert objects.peak["photos"] == PARTS_PER_BUCKET  # the limit, not something lower, bound it
    assert set(objects.peak) == {"photos", "backups"}
