"""IIIF: a Presentation v2 or v3 manifest as a collection, each canvas one item.

`add_manifest(settings, manifest, collection)` reads the manifest (a file path or an
http(s) URL), and for each canvas keeps its label (`title`), metadata (JSON of label ->
value) and rights statement (v3 `rights` / `requiredStatement`, v2 `license` /
`attribution`) in the catalogue. The image is fetched through the IIIF Image API at the
size the card needs (`{service}/full/!N,N/0/default.jpg`, N = `settings.card_size`; both
Image API 2 and 3 accept it), or, without an image service, the canvas's image resource
itself. The fetched image goes through the same decode, verification and card as a file
(`intake.py`); a canvas that cannot be fetched or read is rejected with its reason and the
others are added. The catalogue's `source` is the canvas id and `image_sha256` the hash of
the image fetched; re-running skips canvases already in the catalogue with a card.

Item ids: `<collection>-<n>` (n = the canvas's 1-based position, 4 digits): stable as long
as the manifest keeps its order. The collection name defaults to the manifest's label.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, date, datetime
from pathlib import Path

from flywheel.errors import InputError
from flywheel.settings import Settings

TIMEOUT_S = 60.0


def _text(value) -> str:
    """A v2 string / list / {@value} or a v3 language map as one plain string."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "; ".join(t for t in (_text(v) for v in value) if t)
    if isinstance(value, dict):
        if "@value" in value:
            return str(value["@value"])
        for key in ("en", "none"):
            if key in value:
                return _text(value[key])
        return "; ".join(_text(v) for v in value.values())
    return str(value)


def _id(node) -> str:
    if isinstance(node, str):
        return node
    if isinstance(node, dict):
        return str(node.get("id") or node.get("@id") or "")
    return ""


def load_manifest(manifest: str) -> dict:
    """The manifest JSON from a file path or an http(s) URL; InputError naming the problem."""
    if manifest.startswith(("http://", "https://")):
        data = _fetch(manifest)
    else:
        path = Path(manifest).expanduser()
        if not path.is_file():
            raise InputError(f"IIIF manifest {manifest} is not a file or an http(s) URL")
        data = path.read_bytes()
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise InputError(f"IIIF manifest {manifest} is not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise InputError(f"IIIF manifest {manifest} is not a JSON object")
    return doc


def _fetch(url: str) -> bytes:
    import httpx

    try:
        answer = httpx.get(url, timeout=TIMEOUT_S, follow_redirects=True)
    except httpx.HTTPError as exc:
        raise InputError(f"cannot fetch {url}: {exc}") from None
    if answer.status_code != 200:
        raise InputError(f"cannot fetch {url}: HTTP {answer.status_code}")
    return answer.content


def version_of(doc: dict) -> int:
    context = json.dumps(doc.get("@context", ""))
    if "presentation/3" in context:
        return 3
    if "presentation/2" in context or "sequences" in doc:
        return 2
    if "items" in doc:
        return 3
    raise InputError("not a IIIF Presentation manifest (no v2 `sequences` or v3 `items`)")


def _metadata(node: dict) -> dict[str, str]:
    out = {}
    for entry in node.get("metadata") or []:
        if isinstance(entry, dict):
            out[_text(entry.get("label"))] = _text(entry.get("value"))
    return out


def _service_id(resource: dict) -> str:
    service = resource.get("service")
    if isinstance(service, list):
        service = service[0] if service else None
    return _id(service) if service else ""


def canvases(doc: dict) -> list[dict]:
    """One dict per canvas: id, label, metadata, rights, service (Image API base), image."""
    version = version_of(doc)
    manifest_rights = _rights(doc, version)
    out = []
    if version == 2:
        sequences = doc.get("sequences") or [{}]
        nodes = sequences[0].get("canvases") or []
    else:
        nodes = [n for n in doc.get("items") or [] if n.get("type", "Canvas") == "Canvas"]
    for node in nodes:
        resource = {}
        if version == 2:
            images = node.get("images") or []
            resource = (images[0].get("resource") or {}) if images else {}
        else:
            for page in node.get("items") or []:
                for anno in page.get("items") or []:
                    body = anno.get("body") or {}
                    resource = body[0] if isinstance(body, list) and body else body
                    break
                break
        out.append(
            {
                "id": _id(node),
                "label": _text(node.get("label")),
                "metadata": _metadata(node),
                "rights": _rights(node, version) or manifest_rights,
                "service": _service_id(resource).rstrip("/"),
                "image": _id(resource),
            }
        )
    return out


def _rights(node: dict, version: int) -> str:
    if version == 3:
        parts = [_text(node.get("rights"))]
        statement = node.get("requiredStatement")
        if isinstance(statement, dict):
            parts.append(f"{_text(statement.get('label'))}: {_text(statement.get('value'))}")
    else:
        parts = [_text(node.get("license")), _text(node.get("attribution"))]
    return "; ".join(p for p in parts if p)


def image_url(canvas: dict, size: int) -> str:
    if canvas["service"]:
        return f"{canvas['service']}/full/!{size},{size}/0/default.jpg"
    if canvas["image"]:
        return canvas["image"]
    raise InputError("the canvas has no image resource")


def add_manifest(
    settings: Settings,
    manifest: str,
    collection: str | None = None,
    register: bool = True,
    progress=None,
):
    """Each canvas of the manifest an item (see the module docstring); an IntakeResult."""
    import pandas as pd

    from flywheel.labelling import collection as coll
    from flywheel.labelling import intake

    doc = load_manifest(manifest)
    found = canvases(doc)
    name = coll.slug(collection or _text(doc.get("label")) or "iiif")
    dest_dir = coll.items_dir(settings, name)
    catalogue = coll.read_catalogue(settings) if settings.catalogue_path.exists() else None
    known = coll._known_sources(catalogue)
    owners = {r.item_id: source for source, rows in known.items() for r in rows}
    today = date.today().isoformat()
    now = pd.Timestamp(datetime.now(UTC))
    rows, unchanged, outcomes = [], [], []
    for n, canvas in enumerate(found, start=1):
        item_id = f"{name}-{n:04d}"
        label = canvas["id"] or f"canvas {n}"
        if progress:
            progress()
        old = known.get(canvas["id"])
        if old and all(Path(r.image_path).exists() for r in old):
            unchanged.extend(old)
            outcomes.append(intake.Outcome(label, "unchanged", item_id=item_id))
            continue
        if owners.get(item_id, canvas["id"]) != canvas["id"]:
            outcomes.append(
                intake.Outcome(
                    label, "rejected", f"item id {item_id!r} is already {owners[item_id]}"
                )
            )
            continue
        try:
            url = image_url(canvas, settings.card_size)
            data = _fetch(url)
            card = intake.card_from_bytes(
                data,
                ".jpg" if url.endswith(".jpg") else Path(url).suffix or ".jpg",
                coll.limits(settings),
                settings.data_dir / "tmp" / f"iiif-{item_id}",
            )
        except (InputError, intake.RejectedFile) as exc:
            outcomes.append(intake.Outcome(label, "rejected", str(exc), item_id))
            continue
        dest = dest_dir / f"{item_id}.png"
        intake.save_card(card, dest)
        outcomes.append(
            intake.Outcome(label, "changed" if item_id in owners else "added", item_id=item_id)
        )
        rows.append(
            {
                "item_id": item_id,
                "image_path": str(dest),
                "collection": name,
                "accession_date": today,
                "image_sha256": hashlib.sha256(data).hexdigest(),
                "updated_at": now,
                "source": canvas["id"] or url,
                "source_size": len(data),
                "source_mtime_ns": -1,
                "page": 0,
                "phash": intake.perceptual_hash(card),
                "dup_group": "",
                "title": canvas["label"],
                "metadata": json.dumps(canvas["metadata"], sort_keys=True)
                if canvas["metadata"]
                else "",
                "rights": canvas["rights"],
            }
        )
    return coll._finish(settings, name, rows, unchanged, outcomes, register, source=manifest)
