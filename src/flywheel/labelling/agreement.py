"""Agreement between annotators, and how a disagreement is resolved (pure functions).

When a task is shown to several people (`FLYWHEEL_LABEL_OVERLAP` > 1, Label Studio's
`maximum_annotations` with `overlap_cohort_percentage=100`), each annotator's *latest* usable
answer on the task is their vote (`votes_of`). From the votes:

- per item: how many annotators, and the share that chose the resolved label (`agreement`);
- overall: Krippendorff's alpha for nominal data over every item with >= 2 votes
  (1 = perfect agreement, 0 = what chance gives, < 0 = systematic disagreement);
- per annotator: how many of their items had other votes, the share where they agreed with
  the majority of the *others*, and Cohen's kappa of their labels against that majority
  (items where the others tie are left out).

Resolution policy (`FLYWHEEL_LABEL_RESOLUTION`):

| policy | one vote | votes agree | votes disagree |
|---|---|---|---|
| `latest` (default) | that label | that label | the latest annotation wins (a correction) |
| `majority` | that label | that label | the strict plurality wins; a tie goes to review |
| `review` | that label | that label | goes to review |

An item that goes to review is left out of the snapshot (its annotations stay in Label
Studio) and is listed in the export's stats, so nobody trains on a contested label.
"""

from __future__ import annotations

from collections import Counter

from flywheel.errors import InputError

POLICIES = ("latest", "majority", "review")


def check_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise InputError(
            f"unknown label resolution policy {policy!r}; choose one of {', '.join(POLICIES)}"
        )
    return policy


def votes_of(live: list[dict], who=lambda a: a.get("completed_by")) -> dict:
    """{annotator: label} from a task's usable annotations: each annotator's latest counts."""
    from flywheel.labelling.export import _choice

    def when(a):
        return (a.get("updated_at") or a.get("created_at") or "", a.get("id") or 0)

    votes: dict = {}
    for a in sorted(live, key=when):
        key = who(a)
        key = key.get("id") if isinstance(key, dict) else key
        votes[key] = _choice(a)
    return votes


def resolve_votes(votes: dict, policy: str) -> str | None:
    """The label the votes resolve to under `policy` (not `latest`); None: goes to review."""
    counts = Counter(votes.values()).most_common()
    if not counts:
        return None
    if len(counts) == 1:
        return counts[0][0]
    if policy == "review":
        return None
    if counts[0][1] == counts[1][1]:
        return None  # a tie: no majority
    return counts[0][0]


def item_agreement(votes: dict, label: str) -> float:
    """The share of votes that chose `label`."""
    return sum(v == label for v in votes.values()) / len(votes) if votes else 0.0


def krippendorff_alpha(units: list[list[str]]) -> float | None:
    """Krippendorff's alpha, nominal metric, from each unit's list of values.

    Units with fewer than two values carry no pairable information and are skipped; None
    when nothing is pairable. With a single category throughout, alpha is 1.0.
    """
    coincidence: Counter = Counter()
    for values in units:
        m = len(values)
        if m < 2:
            continue
        counts = Counter(values)
        for c, nc in counts.items():
            for k, nk in counts.items():
                pairs = nc * (nc - 1) if c == k else nc * nk
                coincidence[(c, k)] += pairs / (m - 1)
    n = sum(coincidence.values())
    if n == 0:
        return None
    marg: Counter = Counter()
    for (c, _k), v in coincidence.items():
        marg[c] += v
    observed = sum(v for (c, k), v in coincidence.items() if c != k) / n
    expected = sum(marg[c] * marg[k] for c in marg for k in marg if c != k) / (n * (n - 1))
    if expected == 0:
        return 1.0 if observed == 0 else 0.0
    return 1.0 - observed / expected


def cohen_kappa(a: list[str], b: list[str]) -> float | None:
    """Cohen's kappa of two raters' labels on the same items; None without items."""
    if len(a) != len(b):
        raise InputError("cohen_kappa needs two label lists of the same length")
    n = len(a)
    if n == 0:
        return None
    observed = sum(x == y for x, y in zip(a, b, strict=True)) / n
    ca, cb = Counter(a), Counter(b)
    expected = sum(ca[c] * cb[c] for c in ca) / (n * n)
    if expected == 1:
        return 1.0 if observed == 1 else 0.0
    return (observed - expected) / (1 - expected)


def annotator_agreement(votes_by_item: dict[str, dict]) -> dict:
    """Per annotator: items shared with others, agreement with and kappa against the others'
    majority (see the module docstring)."""
    mine: dict = {}
    for votes in votes_by_item.values():
        if len(votes) < 2:
            continue
        for who, label in votes.items():
            others = Counter(v for w, v in votes.items() if w != who).most_common()
            if len(others) > 1 and others[0][1] == others[1][1]:
                continue  # the others tie: no reference label
            mine.setdefault(who, ([], []))
            mine[who][0].append(label)
            mine[who][1].append(others[0][0])
    out = {}
    for who, (own, ref) in sorted(mine.items(), key=lambda kv: str(kv[0])):
        kappa = cohen_kappa(own, ref)
        out[str(who)] = {
            "items": len(own),
            "agreement": round(sum(x == y for x, y in zip(own, ref, strict=True)) / len(own), 4),
            "kappa": None if kappa is None else round(kappa, 4),
        }
    return out


def summary(votes_by_item: dict[str, dict], resolved: dict[str, str | None]) -> dict:
    """Project-level agreement: alpha, per-annotator numbers, items with overlap / in review."""
    overlapped = {i: v for i, v in votes_by_item.items() if len(v) >= 2}
    alpha = krippendorff_alpha([list(v.values()) for v in overlapped.values()])
    agreements = [item_agreement(v, resolved[i]) for i, v in overlapped.items() if resolved.get(i)]
    return {
        "items_with_overlap": len(overlapped),
        "krippendorff_alpha": None if alpha is None else round(alpha, 4),
        "mean_item_agreement": round(sum(agreements) / len(agreements), 4) if agreements else None,
        "in_review": sorted(i for i, label in resolved.items() if label is None),
        "per_annotator": annotator_agreement(overlapped),
    }
