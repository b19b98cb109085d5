"""Label Studio as the flywheel's source of truth: the project, its storage and its tasks.

Everything here goes through the Label Studio SDK (`label_studio_sdk.LabelStudio`) with the
admin token from the settings. The project is found by its title
(`settings.label_studio_project`) and made once (`ensure_project`): an image-classification
labelling config offering `settings.label_classes`, local-files storage for the item images
under `<home>/data/items/<collection>/`, the trigger webhook, and a Data Manager tab
"flywheel queue" that shows the queued (most uncertain) tasks first.

A task's data is `{"image": <local-files URL>, "item_id": ..., "collection": ..., "priority": 0}`;
`item_id` ties a task to the catalogue. `project_tasks` reads every task with its annotations
and predictions in one JSON export call (the fastest read Label Studio offers).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from xml.sax.saxutils import quoteattr

from flywheel.errors import InputError, ServiceError
from flywheel.settings import Settings

FROM_NAME = "label"  # the <Choices> control
TO_NAME = "image"  # the <Image> object
QUEUE_VIEW = "flywheel queue"
WEBHOOK_ACTIONS = ["ANNOTATION_CREATED", "ANNOTATION_UPDATED"]
CARD_WIDTH = "320px"
# Data Manager columns the queue tab hides, so the model's guess and score stay in view
QUEUE_HIDDEN = [
    "tasks:annotations_results",
    "tasks:annotations_ids",
    "tasks:file_upload",
    "tasks:storage_filename",
    "tasks:created_at",
    "tasks:updated_at",
    "tasks:updated_by",
    "tasks:avg_lead_time",
    "tasks:draft_exists",
    "tasks:inner_id",
]


def label_config(classes: list[str]) -> str:
    """The labelling config: one image, one single choice among `classes`.

    The choices come first: Label Studio fits the image to the panel's height, so choices
    placed below it fall under the fold on a laptop screen (checked in a real browser,
    tests/loop/test_poison.py); the card is bounded (`CARD_WIDTH`) so that the image and
    all the choices fit on one screen (tests/labelling/test_labelling_view.py)."""
    choices = "\n".join(f"    <Choice value={quoteattr(c)}/>" for c in classes)
    return (
        "<View>\n"
        f'  <Choices name="{FROM_NAME}" toName="{TO_NAME}" choice="single" showInline="true">\n'
        f"{choices}\n"
        "  </Choices>\n"
        f'  <Image name="{TO_NAME}" value="$image" zoom="true" maxWidth="{CARD_WIDTH}"/>\n'
        '  <Text name="item" value="$item_id"/>\n'
        "</View>"
    )


def client(settings: Settings):
    """An SDK client for the configured Label Studio (admin token)."""
    from label_studio_sdk import LabelStudio

    return LabelStudio(
        base_url=settings.label_studio_base_url, api_key=settings.ls_token, timeout=120
    )


def _call(what: str, settings: Settings, fn, *args, **kwargs):
    """Call the SDK, turning connection failures and API errors into one clear error."""
    import httpx
    from label_studio_sdk.core.api_error import ApiError

    try:
        return fn(*args, **kwargs)
    except httpx.TransportError as exc:
        raise ServiceError(
            f"cannot reach Label Studio at {settings.label_studio_base_url} ({exc}); "
            "start it with `flywheel up label-studio`"
        ) from None
    except ApiError as exc:
        body = exc.body if isinstance(exc.body, str) else json.dumps(exc.body)[:500]
        raise ServiceError(
            f"Label Studio refused to {what}: HTTP {exc.status_code} {body}"
        ) from None


@dataclass(frozen=True)
class Project:
    id: int
    title: str


def find_project(settings: Settings, ls=None) -> Project | None:
    ls = ls or client(settings)
    for p in _call(
        "list projects",
        settings,
        lambda: list(ls.projects.list(title=settings.label_studio_project)),
    ):
        if p.title == settings.label_studio_project:
            return Project(p.id, p.title)
    return None


def get_project(settings: Settings, ls=None) -> Project:
    """The flywheel project, or a clear error saying how to create it."""
    project = find_project(settings, ls)
    if project is None:
        raise InputError(
            f"Label Studio has no project {settings.label_studio_project!r} "
            f"at {settings.label_studio_base_url}; run `flywheel collection init` "
            "(or `flywheel collection add DIR`) first"
        )
    return project


def ensure_project(settings: Settings, ls=None) -> Project:
    """Find or create the project, its queue tab and its trigger webhook (idempotent)."""
    ls = ls or client(settings)
    project = find_project(settings, ls)
    if project is None:
        p = _call(
            "create the project",
            settings,
            ls.projects.create,
            title=settings.label_studio_project,
            description="flywheel: items to classify; uncertain ones come first",
            label_config=label_config(settings.label_classes),
            show_collab_predictions=True,
            maximum_annotations=settings.label_overlap,
            overlap_cohort_percentage=100,
        )
        project = Project(p.id, p.title)
    else:  # the overlap setting changed since the project was made
        ensure_overlap(settings, project, ls)
    ensure_queue_view(settings, project, ls)
    ensure_webhook(settings, project, ls)
    return project


def ensure_overlap(settings: Settings, project: Project, ls=None) -> None:
    """Show each task to `settings.label_overlap` annotators (Label Studio's overlap)."""
    ls = ls or client(settings)
    p = _call("read the project", settings, ls.projects.get, project.id)
    if p.maximum_annotations != settings.label_overlap:
        _call(
            "set the annotation overlap",
            settings,
            ls.projects.update,
            project.id,
            maximum_annotations=settings.label_overlap,
            overlap_cohort_percentage=100,
        )


def ensure_storage(settings: Settings, project: Project, collection: str, ls=None) -> None:
    """Local-files storage for `<home>/data/items/<collection>` so Label Studio serves it;
    with the items in the object store (FLYWHEEL_STATE_URI=s3://...), S3 storage instead."""
    ls = ls or client(settings)
    if (settings.state_uri or "").startswith("s3://"):
        return _ensure_s3_storage(settings, project, collection, ls)
    path = str(settings.data_dir / "items" / collection)
    existing = _call("list storages", settings, ls.import_storage.local.list, project=project.id)
    if any(s.path == path for s in existing):
        return
    _call(
        "add local-files storage",
        settings,
        ls.import_storage.local.create,
        project=project.id,
        path=path,
        title=f"items/{collection}",
        use_blob_urls=True,
        regex_filter=r".*\.(png|jpe?g)$",
    )


def _ensure_s3_storage(settings: Settings, project: Project, collection: str, ls) -> None:
    """S3 import storage over `<state_uri>/items/<collection>/`: Label Studio presigns the
    tasks' s3:// image URIs with it (no sync: tasks are imported by flywheel)."""
    import os

    from flywheel import objectstore

    bucket, _, prefix = objectstore.state_uri(settings, "items", collection)[5:].partition("/")
    existing = _call("list storages", settings, ls.import_storage.s3.list, project=project.id)
    if any(s.bucket == bucket and s.prefix == prefix for s in existing):
        return
    access, secret = settings.s3_access_key, settings.s3_secret_key
    _call(
        "add S3 storage",
        settings,
        ls.import_storage.s3.create,
        project=project.id,
        bucket=bucket,
        prefix=prefix,
        title=f"items/{collection}",
        s3endpoint=settings.s3_endpoint
        or settings.feast_s3_endpoint
        or os.environ.get("AWS_ENDPOINT_URL"),
        aws_access_key_id=access.get_secret_value()
        if access
        else os.environ.get("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=secret.get_secret_value()
        if secret
        else os.environ.get("AWS_SECRET_ACCESS_KEY"),
        region_name=settings.s3_region,
        presign=True,
        use_blob_urls=True,
        regex_filter=r".*\.(png|jpe?g)$",
    )


def ensure_webhook(settings: Settings, project: Project, ls=None) -> None:
    """Point Label Studio's annotation webhooks at the trigger service (once)."""
    from flywheel.labelling.trigger import TOKEN_HEADER

    ls = ls or client(settings)
    url = trigger_webhook_url(settings)
    headers = {TOKEN_HEADER: settings.webhook_token}  # the trigger refuses hooks without it
    hooks = _call("list webhooks", settings, ls.webhooks.list, project=str(project.id))
    for h in hooks:
        if h.url == url and h.project == project.id:
            if (h.headers or {}) != headers:  # made before the secret, or the secret changed
                _call(
                    "set the trigger webhook's secret",
                    settings,
                    ls.webhooks.update,
                    h.id,
                    url=url,
                    headers=headers,
                )
            return
    _call(
        "register the trigger webhook",
        settings,
        ls.webhooks.create,
        url=url,
        project=project.id,
        send_payload=True,
        send_for_all_actions=False,
        actions=WEBHOOK_ACTIONS,
        is_active=True,
        headers=headers,
    )


def trigger_webhook_url(settings: Settings) -> str:
    base = settings.trigger_url or settings.url(settings.trigger_port)
    return base.rstrip("/") + "/webhook"


def ensure_queue_view(settings: Settings, project: Project, ls=None) -> None:
    """A Data Manager tab listing unlabelled tasks, highest `priority` first."""
    ls = ls or client(settings)
    views = _call("list views", settings, ls.views.list, project=project.id)
    if any((v.data or {}).get("title") == QUEUE_VIEW for v in views):
        return
    data = {
        "title": QUEUE_VIEW,
        "ordering": ["-tasks:data.priority"],
        "hiddenColumns": {"explore": QUEUE_HIDDEN, "labeling": QUEUE_HIDDEN},
        "filters": {
            "conjunction": "and",
            "items": [
                {
                    "filter": "filter:tasks:total_annotations",
                    "operator": "equal",
                    "type": "Number",
                    "value": 0,
                }
            ],
        },
    }
    _call("add the queue view", settings, ls.views.create, project=project.id, data=data)


def project_tasks(settings: Settings, project: Project | None = None, ls=None) -> list[dict]:
    """Every task of the project, with its annotations and predictions (one export call)."""
    ls = ls or client(settings)
    project = project or get_project(settings, ls)
    raw = _call(
        "export the tasks",
        settings,
        lambda: b"".join(
            ls.projects.exports.download_sync(
                project.id, export_type="JSON", download_all_tasks=True
            )
        ),
    )
    return json.loads(raw)


def project_predictions(
    settings: Settings, project: Project | None = None, ls=None
) -> dict[int, list[dict]]:
    """Every prediction of the project by task id: {task_id: [{id, model_version, score,
    result}, ...]} (the JSON export lists only prediction ids)."""
    ls = ls or client(settings)
    project = project or get_project(settings, ls)
    out: dict[int, list[dict]] = {}
    for pr in _call("list predictions", settings, ls.predictions.list, project=project.id):
        out.setdefault(pr.task, []).append(
            {"id": pr.id, "model_version": pr.model_version, "score": pr.score, "result": pr.result}
        )
    return out


def item_id_of(task: dict) -> str:
    item_id = (task.get("data") or {}).get("item_id")
    if not item_id:
        raise InputError(
            f"task {task.get('id')} has no data.item_id: every flywheel task needs one "
            "(add images with `flywheel collection add DIR`, not by hand)"
        )
    return str(item_id)


def tasks_by_item(tasks: list[dict]) -> dict[str, dict]:
    return {item_id_of(t): t for t in tasks}


@lru_cache(maxsize=8)
def _users(base_url: str, token: str) -> dict[int, str]:
    from label_studio_sdk import LabelStudio

    ls = LabelStudio(base_url=base_url, api_key=token)
    return {u.id: u.email or u.username for u in ls.users.list()}


def user_email(settings: Settings, user_id: int | dict | None) -> str:
    """The annotator's e-mail for a `completed_by` value (an id, or an expanded user)."""
    if isinstance(user_id, dict):
        return user_id.get("email") or str(user_id.get("id"))
    if user_id is None:
        return ""
    users = _users(settings.label_studio_base_url, settings.ls_token)
    if user_id not in users:  # a user made after the cache was filled
        _users.cache_clear()
        users = _users(settings.label_studio_base_url, settings.ls_token)
    return users.get(user_id, str(user_id))
