"""Labelling: Label Studio as the flywheel's source of truth.

- collection: the item images, the catalogue (`read_catalogue`), the demo digits
  (`init_demo`) and a person's own folders (`add_images`), registered as Label Studio tasks
- export: annotations -> a versioned label snapshot (`export_labels` -> `Snapshot`)
- acquisition: which items to label next (`select_for_labelling`, pure)
- predictions: the model's guesses as pre-annotations (`upload_predictions`), the labelling
  queue (`queue_for_labelling`) and the unlabelled pool (`unlabelled_items`)
- annotator: `DemoAnnotator`, the clearly named automatic annotator for demos and tests
- trigger / service: the webhook receiver that starts the next turn

Light at import: pandas, PIL, the SDK and FastAPI load inside the functions.
"""

from flywheel.labelling.acquisition import STRATEGIES, select_for_labelling, uncertainty
from flywheel.labelling.annotator import DEMO_EMAIL, DemoAnnotator
from flywheel.labelling.collection import (
    add_images,
    init_demo,
    read_answers,
    read_catalogue,
    render_card,
)
from flywheel.labelling.export import Snapshot, export_labels, read_snapshot
from flywheel.labelling.predictions import (
    predictions_of,
    queue_for_labelling,
    unlabelled_items,
    upload_predictions,
)

__all__ = [
    "DEMO_EMAIL",
    "STRATEGIES",
    "DemoAnnotator",
    "Snapshot",
    "add_images",
    "export_labels",
    "init_demo",
    "predictions_of",
    "queue_for_labelling",
    "read_answers",
    "read_catalogue",
    "read_snapshot",
    "render_card",
    "select_for_labelling",
    "uncertainty",
    "unlabelled_items",
    "upload_predictions",
]
