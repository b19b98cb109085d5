"""The Kubeflow Trainer v2 TrainJob validates against the upstream CRD."""

from __future__ import annotations

import pytest

from flywheel.crds import validate_custom_resource
from flywheel.errors import InputError
from flywheel.training.trainjob import build_trainjob

FRAME = "s3://flywheel/state/training-sets/t.parquet"


@pytest.fixture()
def crds(settings):
    if not (settings.crds_dir / "trainer.kubeflow.org_trainjobs.yaml").exists():
        pytest.skip(f"no TrainJob CRD in {settings.crds_dir}: run `make crds`")
    return settings.crds_dir


def test_trainjob_validates_and_runs_our_entry_point(settings, crds):
    job = build_trainjob(settings, name="turn-7", num_nodes=2, gpus_per_node=4, frame=FRAME)
    validate_custom_resource(job, crds)
    trainer = job["spec"]["trainer"]
    assert job["spec"]["runtimeRef"] == {
        "apiGroup": "trainer.kubeflow.org",
        "kind": "TrainingRuntime",
        "name": settings.training_runtime,
    }
    assert trainer["image"] == settings.image
    assert trainer["command"] == ["torchrun", "-m", "flywheel.training"]
    assert trainer["numNodes"] == 2 and trainer["numProcPerNode"] == 4
    assert trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "4"
    # settings reach the pods from the runtime's envFrom (tests/cluster), not from here
    assert trainer["env"] == [{"name": "FLYWHEEL_TRAINJOB", "value": "turn-7"}]


def test_trainjob_takes_nodes_and_gpus_from_settings(tmp_path, crds):
    from flywheel.settings import load

    s = load(home=tmp_path, train_gpus=2, train_num_nodes=3, image="r.example/f@sha256:" + "1" * 64)
    job = build_trainjob(s, frame=FRAME)
    validate_custom_resource(job, crds)
    trainer = job["spec"]["trainer"]
    assert trainer["numNodes"] == 3 and trainer["numProcPerNode"] == 2
    assert trainer["image"] == s.image
    assert "resourcesPerNode" not in trainer  # the runtime's (limits, GPUs) apply
    with pytest.raises(InputError, match="training set"):
        build_trainjob(s)


def test_cpu_only_trainjob_validates(settings, crds):
    job = build_trainjob(settings, gpus_per_node=0, frame=FRAME, cpu="2", memory="4Gi")
    validate_custom_resource(job, crds)
    assert job["spec"]["trainer"]["resourcesPerNode"]["limits"] == {"cpu": "2", "memory": "4Gi"}


def test_broken_trainjob_is_caught(settings, crds):
    job = build_trainjob(settings, frame=FRAME)
    job["spec"]["trainer"]["numNodes"] = "two"
    with pytest.raises(InputError, match="numNodes"):
        validate_custom_resource(job, crds)
    with pytest.raises(InputError, match="num_nodes"):
        build_trainjob(settings, num_nodes=0, frame=FRAME)


def test_trainjob_for_a_training_set_carries_the_config(settings, crds):
    from flywheel.training.run import TrainConfig
    from flywheel.training.trainjob import config_args

    config = TrainConfig(arch="resnet18", lr=0.01, max_epochs=7, compile=True)
    job = build_trainjob(
        settings, frame="s3://flywheel/sets/t1.parquet", extra_args=config_args(config)
    )
    validate_custom_resource(job, crds)
    args = job["spec"]["trainer"]["args"]
    assert args[:2] == ["--frame", "s3://flywheel/sets/t1.parquet"]
    assert "--compile" in args and args[args.index("--arch") + 1] == "resnet18"
    from flywheel.training.run import parser

    parsed = parser().parse_args(args)  # the entry point accepts exactly these flags
    assert parsed.max_epochs == 7 and parsed.lr == 0.01
