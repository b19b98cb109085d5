"""The cold-start seed set chosen for diversity (FLYWHEEL_ACQUISITION=hybrid).

Before any model exists there is no uncertainty to rank by: the first items to label are
spread over the collection instead of drawn at random (`acquisition.diverse_seed`, a greedy
k-center on the items' vectors: the configured backbone's embeddings, or pixels), so the
first model sees every corner of it and no near-duplicates twice.
"""

from __future__ import annotations

from flywheel.settings import Settings


def diverse_seed_set(settings: Settings, pool: list[str], k: int) -> list[str]:
    from flywheel.features import build_features
    from flywheel.features.vectors import vectors_for
    from flywheel.labelling.acquisition import diverse_seed

    built = build_features(settings)  # idempotent: vectors for every catalogue item
    rep = built.representation_id or "pixels"
    return diverse_seed(vectors_for(pool, settings, rep), pool, k)
