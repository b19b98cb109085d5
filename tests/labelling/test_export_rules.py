"""The export rules on exported task JSON (pure; the real round trip is in test_project)."""

import pytest

from flywheel.errors import InputError
from flywheel.labelling.annotator import choice_result
from flywheel.labelling.export import resolve, snapshot_frame

CLASSES = [str(d) for d in range(10)]


def ann(id, label, at, by=1, cancelled=False):
    return {
        "id": id,
        "result": choice_result(label) if label is not None else [],
        "completed_by": by,
        "was_cancelled": cancelled,
        "created_at": at,
        "updated_at": at,
    }


def task(id, *annotations):
    return {"id": id, "data": {"item_id": f"it-{id}"}, "annotations": list(annotations)}


TASKS = [
    task(1, ann(11, "3", "2026-01-01T00:00:00Z")),
    task(
        2, ann(21, "4", "2026-01-01T00:00:00Z", by=1), ann(22, "5", "2026-01-02T00:00:00Z", by=2)
    ),  # latest wins
    task(3, ann(31, "6", "2026-01-03T00:00:00Z", cancelled=True)),  # skipped only
    task(4),  # no annotation
    task(
        5,
        ann(51, "7", "2026-01-01T00:00:00Z"),
        ann(52, "8", "2026-01-05T00:00:00Z", cancelled=True),
    ),  # cancel ignored
    task(6, ann(61, None, "2026-01-01T00:00:00Z")),  # empty result
]


def test_rules():
    rows, stats = resolve(TASKS, CLASSES, lambda u: f"user{u}@x")
    got = {r["item_id"]: (r["label"], r["annotator"], r["task_id"]) for r in rows}
    assert got == {
        "it-1": ("3", "user1@x", 1),
        "it-2": ("5", "user2@x", 2),
        "it-5": ("7", "user1@x", 5),
    }
    counts = {k: stats[k] for k in ("tasks", "labelled", "unlabelled", "cancelled", "overruled")}
    assert counts == {"tasks": 6, "labelled": 3, "unlabelled": 3, "cancelled": 2, "overruled": 1}


def test_label_outside_classes_names_the_task():
    bad = [task(9, ann(91, "cat", "2026-01-01T00:00:00Z"))]
    with pytest.raises(InputError, match=r"task 9 \(item it-9\) is labelled 'cat'"):
        resolve(bad, CLASSES)


def test_bad_rows_are_quarantined_and_counted_until_the_share_drops():
    good = [task(i, ann(i * 10, str(i % 10), "2026-01-01T00:00:00Z")) for i in range(1, 19)]
    no_id = {"id": 99, "data": {}, "annotations": [ann(991, "3", "2026-01-01T00:00:00Z")]}
    cat = task(98, ann(981, "cat", "2026-01-01T00:00:00Z"))
    bad: list[dict] = []
    rows, stats = resolve([*good, no_id, cat], CLASSES, max_bad_share=0.1, quarantine=bad)
    assert len(rows) == 18 and stats["labelled"] == 18 and stats["quarantined"] == 2
    assert {b["task_id"] for b in bad} == {98, 99}
    assert any("no data.item_id" in b["reason"] for b in bad)
    assert any("labelled 'cat'" in b["reason"] for b in bad)
    # three bad of 21 labelled tasks is more than 10 %: the export fails loudly
    other = task(97, ann(971, "dog", "2026-01-01T00:00:00Z"))
    with pytest.raises(InputError, match=r"3 of 21 labelled tasks are bad"):
        resolve([*good, no_id, cat, other], CLASSES, max_bad_share=0.1)


def test_snapshot_id_is_a_content_hash():
    rows, _ = resolve(TASKS, CLASSES)
    frame, sid = snapshot_frame(rows)
    again, sid2 = snapshot_frame(list(reversed(rows)))
    assert sid == sid2 and (frame == again).all().all()
    assert list(frame.columns) == [
        "item_id",
        "label",
        "annotator",
        "annotated_at",
        "task_id",
        "snapshot_id",
        "n_annotators",
        "agreement",
    ]
    assert str(frame.annotated_at.dtype) == "datetime64[ns, UTC]"
    assert frame.task_id.dtype == "int64"
    rows[0]["label"] = "9"
    assert snapshot_frame(rows)[1] != sid


def test_empty_project_gives_an_empty_snapshot():
    frame, sid = snapshot_frame(resolve([], CLASSES)[0])
    assert len(frame) == 0 and len(sid) == 16
    assert str(frame.annotated_at.dtype) == "datetime64[ns, UTC]"
