"""Agreement between annotators and the resolution policies, on crafted overlaps (pure)."""

import pytest

from flywheel.errors import InputError
from flywheel.labelling import agreement as agr
from flywheel.labelling.export import resolve, snapshot_frame
from tests.labelling.test_export_rules import CLASSES, ann, task

T1, T2, T3 = "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z", "2026-01-03T00:00:00Z"

# three annotators (1, 2, 3) on every task
OVERLAP = [
    task(1, ann(11, "3", T1, by=1), ann(12, "3", T1, by=2), ann(13, "3", T1, by=3)),  # all agree
    task(2, ann(21, "4", T1, by=1), ann(22, "4", T2, by=2), ann(23, "9", T3, by=3)),  # 2 vs 1
    task(3, ann(31, "5", T1, by=1), ann(32, "6", T2, by=2)),  # a tie
    task(4, ann(41, "7", T1, by=1)),  # one vote
    # annotator 2 corrects themselves: only their latest answer is their vote
    task(5, ann(51, "8", T1, by=1), ann(52, "1", T1, by=2), ann(53, "8", T3, by=2)),
]


def email(u):
    return f"a{u}@x"


def by_item(rows):
    return {r["item_id"]: r for r in rows}


def test_majority_policy_on_crafted_overlaps():
    rows, stats = resolve(OVERLAP, CLASSES, email, "majority")
    got = by_item(rows)
    assert {i: r["label"] for i, r in got.items()} == {
        "it-1": "3",
        "it-2": "4",
        "it-4": "7",
        "it-5": "8",
    }
    assert got["it-2"]["agreement"] == pytest.approx(2 / 3)
    assert got["it-2"]["n_annotators"] == 3
    assert got["it-1"]["agreement"] == 1.0 and got["it-4"]["n_annotators"] == 1
    assert got["it-5"]["n_annotators"] == 2 and got["it-5"]["agreement"] == 1.0
    # the majority's latest annotation is the winner (annotator 2 on it-2)
    assert got["it-2"]["annotator"] == "a2@x"
    a = stats["agreement"]
    assert a["in_review"] == ["it-3"] and stats["in_review"] == 1
    assert a["items_with_overlap"] == 4
    per = a["per_annotator"]
    assert set(per) == {"a1@x", "a2@x", "a3@x"}
    assert per["a3@x"]["agreement"] == 0.5  # agreed on it-1, not on it-2
    # annotator 1 vs the others' majority: it-1 (3=3), it-2 (4: others tie 4/9 -> skipped),
    # it-3 (others: 6, disagrees), it-5 (8=8)
    assert per["a1@x"]["items"] == 3 and per["a1@x"]["agreement"] == pytest.approx(2 / 3, abs=1e-3)


def test_review_policy_sends_every_disagreement_to_review():
    rows, stats = resolve(OVERLAP, CLASSES, email, "review")
    assert sorted(by_item(rows)) == ["it-1", "it-4", "it-5"]
    assert stats["agreement"]["in_review"] == ["it-2", "it-3"]


def test_latest_policy_keeps_the_old_rule_but_still_measures_agreement():
    rows, stats = resolve(OVERLAP, CLASSES, email, "latest")
    got = by_item(rows)
    assert got["it-2"]["label"] == "9" and got["it-3"]["label"] == "6"
    assert stats["agreement"]["in_review"] == []
    assert stats["agreement"]["krippendorff_alpha"] is not None


def test_agreement_columns_reach_the_snapshot():
    rows, stats = resolve(OVERLAP, CLASSES, email, "majority")
    frame, _ = snapshot_frame(rows)
    assert list(frame.columns[-3:]) == ["snapshot_id", "n_annotators", "agreement"] or {
        "n_annotators",
        "agreement",
    } <= set(frame.columns)
    assert frame.set_index("item_id").loc["it-2", "agreement"] == pytest.approx(2 / 3)


def test_krippendorff_alpha_known_values():
    # perfect agreement
    assert agr.krippendorff_alpha([["a", "a"], ["b", "b"], ["c", "c"]]) == 1.0
    # 2 coders, 10 units, worked by hand from the definition: o_ab = o_ba = 3, n = 20,
    # n_a = 13, n_b = 7; D_o = 6/20, D_e = 2*13*7/(20*19) -> alpha = 1 - 114/182 = 68/182
    c1 = list("aaabbaaaab")
    c2 = list("abbbbaaaaa")
    pairs = [[x, y] for x, y in zip(c1, c2, strict=True)]
    assert agr.krippendorff_alpha(pairs) == pytest.approx(68 / 182)
    # with two coders and no missing values, alpha ~ Scott's pi corrected for sample size
    # systematic disagreement is below zero
    assert agr.krippendorff_alpha([["a", "b"], ["b", "a"]]) < 0
    assert agr.krippendorff_alpha([["a"], ["b"]]) is None  # nothing pairable


def test_cohen_kappa_known_values():
    assert agr.cohen_kappa(list("aabb"), list("aabb")) == 1.0
    # p_o = 0.5, p_e = 0.5 -> 0
    assert agr.cohen_kappa(list("abab"), list("aabb")) == pytest.approx(0.0)
    with pytest.raises(InputError):
        agr.cohen_kappa(["a"], [])


def test_unknown_policy_is_refused():
    with pytest.raises(InputError, match="unknown label resolution policy 'vote'"):
        resolve(OVERLAP, CLASSES, email, "vote")
