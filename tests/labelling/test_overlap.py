"""Overlap against a real Label Studio: the project shows each task to N annotators, two
annotators disagree, the export resolves by the policy and records the agreement; the demo
annotator's deliberate errors are recorded so noise review can be scored."""

import json

from pydantic import SecretStr

from flywheel.labelling import DemoAnnotator, export_labels, init_demo
from flywheel.labelling import client as lsc
from flywheel.labelling.annotator import choice_result, injected_errors
from flywheel.labelling.collection import read_answers
from flywheel.labelling.export import quality_path

N_ITEMS = 12


def test_overlap_majority_and_agreement_in_the_snapshot(stack):
    settings = stack.model_copy(
        update={
            "home": stack.items_dir / "overlap-home",  # LS serves files under items only
            "label_studio_project": "overlap-tests",
            "label_studio_token": SecretStr(stack.ls_token),
            "label_overlap": 2,
            "label_resolution": "majority",
            "demo_noise_rate": 0.25,
        }
    )
    init_demo(settings, limit=N_ITEMS)
    ls = lsc.client(settings)
    project = lsc.get_project(settings, ls)
    got = ls.projects.get(project.id)
    assert got.maximum_annotations == 2 and got.overlap_cohort_percentage == 100

    items = [f"digits-{i:04d}" for i in range(N_ITEMS)]
    DemoAnnotator(settings).label(items)  # 25 % wrong on purpose
    wrong = injected_errors(settings)
    assert 0 < len(wrong) < N_ITEMS
    answers = read_answers(settings)
    assert all(answers[i] != label for i, label in wrong.items())
    # a second annotator (the admin) gives the true label on every item
    admin = next(u.id for u in ls.users.list() if u.email == settings.label_studio_username)
    tasks = lsc.tasks_by_item(lsc.project_tasks(settings, project, ls))
    for item in items:
        ls.annotations.create(
            tasks[item]["id"], result=choice_result(answers[item]), completed_by=admin
        )
    snap = export_labels(settings)
    a = snap.stats["agreement"]
    # two votes each: the items with a deliberate error tie -> review; the rest agree
    assert sorted(a["in_review"]) == sorted(wrong)
    assert set(snap.frame.item_id) == set(items) - set(wrong)
    assert (snap.frame.n_annotators == 2).all() and (snap.frame.agreement == 1.0).all()
    assert a["items_with_overlap"] == N_ITEMS
    assert a["krippendorff_alpha"] < 1.0
    per = a["per_annotator"]
    assert per[settings.label_studio_username]["agreement"] < 1.0
    assert json.loads(quality_path(snap.path).read_text()) == json.loads(json.dumps(a))
