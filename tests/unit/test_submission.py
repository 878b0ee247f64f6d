"""Submissions: dedup keys, canonical JSON, the builder, the payload cap, typed tasks, decoding."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import ClassVar

import pytest

from bus.errors import PayloadTooLarge, SerializationError, StoreError, TaskmillError
from bus.kinds import Submission
from taskmill.priority import Priority
from taskmill.task import (
    MAX_PAYLOAD_BYTES,
    TaskSubmission,
    canonical_json,
    decode_payload,
    generate_dedup_key,
)
from taskmill.typed import TypedTask


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- generate_dedup_key -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task_type", "data", "hashed"),
    [
        ("thumbnail", b"abc", b"thumbnail:abc"),
        ("thumbnail", b"", b"thumbnail:"),
        ("thumbnail", None, b"thumbnail:"),
        ("t\u00e9l\u00e9", b"\x00\xff", "t\u00e9l\u00e9:".encode() + b"\x00\xff"),
    ],
)
def test_dedup_key_is_sha256_of_type_colon_data(
    task_type: str, data: bytes | None, hashed: bytes
) -> None:
    key = generate_dedup_key(task_type, data)
    assert key == sha(hashed)
    assert len(key) == 64 and key == key.lower()


def test_dedup_key_known_vector() -> None:
    # sha256("upload:etag-1"), computed outside taskmill.
    expected = hashlib.sha256(b"upload:etag-1").hexdigest()
    assert generate_dedup_key("upload", b"etag-1") == expected
    assert generate_dedup_key("upload", b"etag-1") != generate_dedup_key("upload2", b"etag-1")


def test_submission_dedups_on_explicit_key_over_payload() -> None:
    sub = TaskSubmission("upload").payload(b"body").key("etag-1")
    assert sub.dedup_key == sha(b"upload:etag-1")
    assert sub.to_wire().key == sha(b"upload:etag-1")


def test_submission_dedups_on_payload_without_key() -> None:
    assert TaskSubmission("upload").payload(b"body").dedup_key == sha(b"upload:body")


def test_keyless_payloadless_submissions_of_a_type_share_one_key() -> None:
    assert TaskSubmission("tick").dedup_key == sha(b"tick:")
    assert TaskSubmission("tick").dedup_key == TaskSubmission("tick", label="x").dedup_key


def test_empty_explicit_key_is_still_a_key() -> None:
    assert TaskSubmission("t").key("").payload(b"p").dedup_key == sha(b"t:")


# -- canonical_json -----------------------------------------------------------------------------


@dataclass
class Part:
    etag: str
    size: int


@dataclass
class Upload:
    bucket: str
    parts: list[Part] = field(default_factory=list)


def test_canonical_json_is_compact_sorted_utf8() -> None:
    assert canonical_json({"b": 1, "a": [1, 2], "c": "\u00e9"}) == (
        '{"a":[1,2],"b":1,"c":"\u00e9"}'.encode()
    )


def test_canonical_json_ignores_dict_order() -> None:
    one = {"z": {"y": 1, "x": 2}, "a": None}
    two = {"a": None, "z": {"x": 2, "y": 1}}
    assert canonical_json(one) == canonical_json(two)
    assert TaskSubmission("t").payload_json(one).dedup_key == (
        TaskSubmission("t").payload_json(two).dedup_key
    )


def test_canonical_json_encodes_dataclasses_as_their_fields() -> None:
    upload = Upload("b", [Part("e1", 5), Part("e2", 7)])
    as_dict = {"parts": [{"size": 5, "etag": "e1"}, {"etag": "e2", "size": 7}], "bucket": "b"}
    assert canonical_json(upload) == canonical_json(as_dict)
    assert canonical_json(upload) == (
        b'{"bucket":"b","parts":[{"etag":"e1","size":5},{"etag":"e2","size":7}]}'
    )


def test_canonical_json_matches_the_documented_json_dumps() -> None:
    value = {"k": [1.5, True, None, "x"], "\u00fc": {"n": -3}}
    expected = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert canonical_json(value) == expected.encode()


@pytest.mark.parametrize(
    "value",
    [{1, 2}, math.nan, {"x": math.inf}, object(), b"bytes", {(1, 2): "tuple key"}],
    ids=["set", "nan", "inf", "object", "bytes", "tuple-key"],
)
def test_unencodable_values_raise_serialization_error(value: object) -> None:
    with pytest.raises(SerializationError):
        canonical_json(value)
    with pytest.raises(SerializationError):
        TaskSubmission("t").payload_json(value)


def test_serialization_error_is_a_store_error() -> None:
    with pytest.raises(StoreError):
        canonical_json({1, 2})
    assert issubclass(SerializationError, TaskmillError)


def test_circular_structures_raise_serialization_error() -> None:
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(SerializationError):
        canonical_json(loop)


# -- the builder --------------------------------------------------------------------------------


def test_builder_and_keyword_arguments_build_the_same_submission() -> None:
    built = (
        TaskSubmission("upload-part")
        .key("etag-123")
        .label("part 3 of 9")
        .priority(Priority.HIGH)
        .payload_json({"n": 3})
        .expected_io(10, 20)
        .expected_net_io(30, 40)
        .group("s3://bucket")
        .fail_fast(False)
    )
    kwargs = TaskSubmission(
        "upload-part",
        key="etag-123",
        label="part 3 of 9",
        priority=Priority.HIGH,
        payload_json={"n": 3},
        expected_read_bytes=10,
        expected_write_bytes=20,
        expected_net_rx_bytes=30,
        expected_net_tx_bytes=40,
        group="s3://bucket",
        fail_fast=False,
    )
    assert built == kwargs
    assert built.to_wire() == kwargs.to_wire()
    assert built != TaskSubmission("upload-part", key="etag-123")


def test_every_builder_method_returns_the_submission() -> None:
    sub = TaskSubmission("t")
    calls = [
        sub.key("k"), sub.label("l"), sub.priority(3), sub.payload_json([1]), sub.payload(b"x"),
        sub.expected_io(1, 2), sub.expected_net_io(3, 4), sub.group("g"), sub.fail_fast(True),
    ]  # fmt: skip
    assert all(result is sub for result in calls)


def test_to_wire_carries_every_field() -> None:
    sub = TaskSubmission("t", key="k", priority=7, payload=b"p", group="g", fail_fast=False)
    sub.expected_io(1, 2).expected_net_io(3, 4)
    sub.parent_id = 99
    assert sub.to_wire() == Submission(
        task_type="t", key=sha(b"t:k"), label="k", priority=7, payload=b"p",
        expected_read_bytes=1, expected_write_bytes=2, expected_net_rx_bytes=3,
        expected_net_tx_bytes=4, group_key="g", fail_fast=False, parent_id=99,
    )  # fmt: skip


def test_defaults() -> None:
    sub = TaskSubmission("t")
    wire = sub.to_wire()
    assert sub.priority_level is Priority.NORMAL and wire.priority == 128
    assert wire.payload is None and wire.group_key is None and wire.parent_id is None
    assert wire.fail_fast is True and sub.is_fail_fast
    assert (wire.expected_read_bytes, wire.expected_net_tx_bytes) == (0, 0)


def test_label_defaults_to_key_then_task_type() -> None:
    assert TaskSubmission("t").display_label == "t"
    assert TaskSubmission("t").payload(b"p").to_wire().label == "t"
    assert TaskSubmission("t").key("etag").to_wire().label == "etag"
    assert TaskSubmission("t").key("etag").label("part 1").to_wire().label == "part 1"
    assert TaskSubmission("t").label("part 1").key("etag").display_label == "part 1"


def test_payload_json_sets_canonical_payload() -> None:
    sub = TaskSubmission("t").payload_json(Part("e", 1))
    assert sub.payload_bytes == b'{"etag":"e","size":1}'
    assert sub.dedup_key == sha(b't:{"etag":"e","size":1}')


def test_later_payload_call_replaces_earlier() -> None:
    assert TaskSubmission("t").payload_json([1]).payload(b"raw").payload_bytes == b"raw"
    assert TaskSubmission("t").payload(b"raw").payload_json([1]).payload_bytes == b"[1]"


@pytest.mark.parametrize("bad", [-1, 256])
def test_priority_out_of_range_raises_value_error(bad: int) -> None:
    with pytest.raises(ValueError):
        TaskSubmission("t").priority(bad)
    with pytest.raises(ValueError):
        TaskSubmission("t", priority=bad)


def test_invalid_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        TaskSubmission("t", payload=b"x", payload_json={"a": 1})
    with pytest.raises(ValueError):
        TaskSubmission("t").expected_io(-1, 0)
    with pytest.raises(ValueError):
        TaskSubmission("")
    with pytest.raises(TypeError):
        TaskSubmission("t").payload("text")  # type: ignore[arg-type]


def test_payload_of_exactly_one_mib_is_accepted() -> None:
    assert MAX_PAYLOAD_BYTES == 1_048_576
    wire = TaskSubmission("t").payload(b"x" * 1_048_576).to_wire()
    assert wire.payload is not None and len(wire.payload) == 1_048_576


def test_payload_over_one_mib_raises_payload_too_large_at_submit() -> None:
    sub = TaskSubmission("t").payload(b"x" * 1_048_577)  # building is fine
    with pytest.raises(PayloadTooLarge):
        sub.to_wire()
    with pytest.raises(StoreError):
        TaskSubmission("t").payload_json("y" * 1_048_576).to_wire()  # + 2 quote bytes


def test_copy_is_independent() -> None:
    template = TaskSubmission("t").group("g")
    copy = template.copy().key("k")
    assert template.explicit_key is None and copy.explicit_key == "k"
    assert copy.group_key == "g"


# -- typed tasks --------------------------------------------------------------------------------


@dataclass
class Thumbnail(TypedTask):
    TASK_TYPE: ClassVar[str] = "thumbnail"
    path: str
    size: int


@dataclass
class BigUpload(TypedTask):
    TASK_TYPE: ClassVar[str] = "big-upload"
    upload: Upload

    def expected_read_bytes(self) -> int:
        return 4_096

    def expected_write_bytes(self) -> int:
        return 1_024

    def expected_net_rx_bytes(self) -> int:
        return 5

    def expected_net_tx_bytes(self) -> int:
        return 6

    def priority(self) -> Priority:
        return Priority.BACKGROUND

    def group_key(self) -> str | None:
        return f"s3://{self.upload.bucket}"


def test_typed_task_submits_canonical_json_without_explicit_key() -> None:
    sub = Thumbnail("/photos/a.jpg", 256).to_submission()
    payload = b'{"path":"/photos/a.jpg","size":256}'
    assert sub.task_type == "thumbnail"
    assert sub.payload_bytes == payload
    assert sub.explicit_key is None
    assert sub.dedup_key == sha(b"thumbnail:" + payload)
    wire = sub.to_wire()
    assert wire.priority == Priority.NORMAL and wire.label == "thumbnail"
    assert (wire.expected_read_bytes, wire.expected_write_bytes, wire.group_key) == (0, 0, None)


def test_equal_typed_tasks_have_the_same_key() -> None:
    a = Thumbnail("/a", 1).to_submission().dedup_key
    assert a == Thumbnail("/a", 1).to_submission().dedup_key
    assert a != Thumbnail("/a", 2).to_submission().dedup_key


def test_typed_task_overrides_reach_the_submission() -> None:
    wire = BigUpload(Upload("bkt", [Part("e", 1)])).to_submission().to_wire()
    assert wire.priority == Priority.BACKGROUND
    assert (wire.expected_read_bytes, wire.expected_write_bytes) == (4_096, 1_024)
    assert (wire.expected_net_rx_bytes, wire.expected_net_tx_bytes) == (5, 6)
    assert wire.group_key == "s3://bkt"


def test_typed_task_explicit_priority_wins() -> None:
    upload = BigUpload(Upload("b"))
    assert upload.to_submission(Priority.HIGH).priority_level == Priority.HIGH
    with pytest.raises(ValueError):
        upload.to_submission(300)


def test_typed_task_without_task_type_is_a_type_error() -> None:
    @dataclass
    class NoType(TypedTask):
        x: int

    with pytest.raises(TypeError, match="TASK_TYPE"):
        NoType(1).to_submission()


# -- decoding -----------------------------------------------------------------------------------


def test_payload_decodes_back_into_the_dataclass() -> None:
    original = BigUpload(Upload("b", [Part("e1", 5), Part("e2", 6)]))
    payload = original.to_submission().payload_bytes
    assert decode_payload(payload, BigUpload) == original
    assert BigUpload.decode(payload) == original


def test_payload_without_class_decodes_to_plain_json() -> None:
    assert decode_payload(b'{"a":[1,2]}') == {"a": [1, 2]}
    assert decode_payload(b"[1,2]") == [1, 2]
    assert decode_payload(None) is None


def test_decoding_tolerates_unknown_keys_and_uses_defaults() -> None:
    assert decode_payload(b'{"bucket":"b","extra":1}', Upload) == Upload("b", [])


@dataclass
class Shapes:
    ratio: float
    tags: tuple[str, ...]
    by_name: dict[str, Part]
    maybe: Part | None = None


def test_decoding_converts_annotated_containers() -> None:
    raw = b'{"ratio":1,"tags":["a","b"],"by_name":{"x":{"etag":"e","size":2}},"maybe":null}'
    decoded = decode_payload(raw, Shapes)
    assert decoded == Shapes(1.0, ("a", "b"), {"x": Part("e", 2)}, None)
    assert isinstance(decoded.ratio, float)


@pytest.mark.parametrize(
    ("data", "cls"),
    [
        (b"{not json", None),
        (b"\xff\xfe", None),
        (b'{"etag":"e"}', Part),  # missing field
        (b'{"etag":"e","size":"big"}', Part),  # wrong type
        (b'{"etag":"e","size":true}', Part),  # bool is not an int here
        (b"[1,2]", Part),  # not an object
        (None, Part),  # no payload
        (b'{"bucket":"b","parts":[{"etag":1,"size":2}]}', Upload),  # nested mismatch
    ],
)
def test_bad_payloads_raise_serialization_error(data: bytes | None, cls: type | None) -> None:
    with pytest.raises(SerializationError):
        decode_payload(data, cls)
