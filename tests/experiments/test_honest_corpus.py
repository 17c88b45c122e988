"""The honest corpus: its variety, its disjoint parts, real cached training, the colour data."""

from __future__ import annotations

import logging

import torch

from gradguard.data import load_dataset
from gradguard.experiments import false_positives as fp
from gradguard.experiments import honest_corpus as hc
from gradguard.experiments import photo_patches
from gradguard.experiments.harness import GUARD

logging.getLogger("gradguard.detect").setLevel(logging.ERROR)

TINY = hc.CorpusSpec(
    datasets=("digits",),
    small_families=(("mlp", None),),
    resnet18_families=(),
    optimisers=("adam", "sgd-label-smoothing"),
    rounds=2,
    snapshots=(1, 2),
    limit=120,
    evaluation_optimisers=(("digits", 2),),
)


def test_default_corpus_spans_every_axis_and_keeps_parts_disjoint():
    ev = hc.corpus_runs("evaluation")
    cal = hc.corpus_runs("calibration")
    assert hc.size(ev) >= 300
    records = [
        {
            "family": r.family,
            "norm": r.norm or "-",
            "optimiser": r.optimiser,
            "dataset": r.dataset,
            "partition": r.partition,
            "stage": hc.stage(rnd, r.rounds),
        }
        for r in ev
        for rnd in r.snapshots
    ]
    counts = hc.Composition.of(records).counts
    for fam in ("mlp", "convnet", "resnet-batch", "resnet-group", "resnet-layer", "vit-tiny"):
        assert counts["family"][fam] >= 30
    for fam in ("resnet18-batch", "resnet18-group", "resnet18-layer"):
        assert counts["family"][fam] >= 3
    assert set(counts["optimiser"]) == set(hc.OPTIMISERS)
    assert set(counts["dataset"]) == {"digits", "fashion-mnist", "photos"}
    assert set(counts["partition"]) == {"iid", "dirichlet:0.1"}
    assert set(counts["stage"]) == {"initial", "early", "middle", "last"}
    assert all(r.dataset == "photos" for r in ev + cal if r.model == "resnet18")
    assert {r.training.optimizer for r in ev} == {"sgd", "adam", "adamw"}
    assert any(r.training.label_smoothing for r in ev)
    assert any(r.training.weight_decay for r in ev)
    assert max(r.seed for r in ev) < 1000 <= min(r.seed for r in cal)
    assert {r.optimiser for r in cal} == set(hc.OPTIMISERS)
    assert all(r.seed >= 2000 for r in hc.corpus_runs("diverged"))


def test_tiny_corpus_trains_caches_and_passes_the_guard(tmp_path):
    runs = hc.corpus_runs("evaluation", TINY)
    assert [r.optimiser for r in runs] == ["adam", "sgd-label-smoothing"]
    models = list(hc.models(runs, tmp_path))
    assert [(m.run.optimiser, m.round) for m in models] == [
        ("adam", 0),
        ("adam", 1),
        ("adam", 2),
        ("sgd-label-smoothing", 1),
        ("sgd-label-smoothing", 2),
    ]
    assert models[2].accuracy > models[0].accuracy + 0.1  # real training happened
    assert models[0].previous is None
    torch.testing.assert_close(models[2].previous, models[1].state)
    again = list(hc.models(runs[:1], tmp_path))  # read back from the cache
    torch.testing.assert_close(again[2].state, models[2].state)
    result = fp.run(runs, tmp_path, ["health", "forensics"], progress=False)
    overall = result["summary"]["overall"]
    assert overall[GUARD]["models"] == 5 and overall[GUARD]["flagged"] == 0
    assert result["summary"]["by_axis"]["optimiser"]["adam"]["models"] == 3


def test_photo_patches_are_a_real_colour_image_folder(tmp_path):
    folder = photo_patches.build(tmp_path, per_class=5)
    train = load_dataset(str(folder), "train")
    test = load_dataset(str(folder), "test")
    assert train.image_shape == (3, 32, 32) and train.num_classes == 8
    assert len(train) + len(test) == 40
    assert float(train.x.std()) > 0.05  # real photos, not a constant fill
    # colour: the channels differ
    assert float((train.x[:, 0] - train.x[:, 2]).abs().mean()) > 0.01
    assert photo_patches.build(tmp_path, per_class=5) == folder  # deterministic, cached
