"""``collaborative`` ``class_axes``: every final network finds the object, some of them alone split it into its
classes; the rule on small arrays, the settings' choice, and a real cohort model that keeps it through Save."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from SparseSegLib.annotation import annotate_case
from SparseSegLib.engine.inference import split_by
from SparseSegLib.engine.model import load_segmenter
from SparseSegLib.engine.networks import NetworkConfig
from SparseSegLib.errors import SparseSegError
from SparseSegLib.methods import MethodOptions, get_method
from SparseSegLib.methods.base import SilentReporter
from SparseSegLib.methods.collaborative.settings import IMPROVED, CollaborativeSettings

from axis_ensemble_support import member_probabilities


def test_the_split_shares_the_averaged_object_probability_in_the_class_members_proportions():
    averaged = np.array([[0.2, 0.9], [0.5, 0.05], [0.3, 0.05]])  # (background, class 1, class 2) at two voxels
    classes = np.array([[0.5, 0.1], [0.1, 0.3], [0.4, 0.6]])  # what the class members say
    split = split_by(averaged, classes)
    np.testing.assert_allclose(split[0], averaged[0])  # the object is everyone's
    np.testing.assert_allclose(split.sum(0), 1)
    np.testing.assert_allclose(split[1:, 0], 0.8 * np.array([0.2, 0.8]))  # 0.1 : 0.4 of the object
    np.testing.assert_allclose(split[1:, 1], 0.1 * np.array([1 / 3, 2 / 3]))
    one_object = averaged[:2] / averaged[:2].sum(0)
    np.testing.assert_array_equal(split_by(one_object, classes[:2]), one_object)  # nothing to split


def test_class_axes_auto_picks_the_networks_across_the_other_axes_only_where_the_split_is_learnt_from_the_paint():
    improved = CollaborativeSettings.parse({}, IMPROVED)
    assert improved.class_axes == "auto" and improved.member_axes == (0, 1, 2)
    assert improved.class_members(volumes=140, num_classes=3) == (1, 2)  # a cohort: pseudo_classes auto learns it
    assert improved.class_members(volumes=1, num_classes=3) == ()  # a single-scan job keeps the propagated split
    assert improved.class_members(volumes=140, num_classes=2) == ()  # one object class: nothing to split
    seeds = CollaborativeSettings.parse({"final_seeds": 2}, IMPROVED)
    assert seeds.class_members(volumes=10, num_classes=3) == (1, 2, 4, 5)  # axes 0, 1, 2, 0, 1, 2
    assert CollaborativeSettings.parse({"class_axes": "0"}, IMPROVED).class_members(1, 3) == (0,)
    assert CollaborativeSettings.parse({"class_axes": "all"}, IMPROVED).class_members(140, 3) == ()
    with pytest.raises(SparseSegError, match="class_axes"):
        CollaborativeSettings.parse({"class_axes": "2", "final_axes": "0,1"}, IMPROVED).check()
    with pytest.raises(SparseSegError, match="class_axes"):
        CollaborativeSettings.parse({"class_axes": "3"}, IMPROVED).check()


def test_the_network_config_keeps_and_checks_its_class_members():
    config = NetworkConfig(axes=(0, 1, 2), class_members=(1, 2))
    assert NetworkConfig.from_dict(config.to_dict()) == config
    assert NetworkConfig.from_dict({k: v for k, v in config.to_dict().items() if k != "class_members"}).class_members == ()
    with pytest.raises(SparseSegError, match="class_members"):
        NetworkConfig(axes=(0, 1), class_members=(2,))
    assert replace(config, axes=(0,)).class_members == ()  # one member taken out splits its own classes


def test_a_cohort_model_splits_its_classes_with_the_other_axes_networks_and_keeps_that_when_saved(sample_dataset,
                                                                                                  tmp_path):
    cases = [annotate_case(sample_dataset.load(ref), "central-slice", 0) for ref in sample_dataset.cases[:2]]
    options = MethodOptions(device="cpu", iterations=20, batch_size=4,
                            extra=dict(registration="demons", demons_iterations=5, branches="registration",
                                       fusion="intersection", final_axes="0,1,2", pseudo_classes="ground-truth",
                                       class_axes="auto"))
    segmenter = get_method("collaborative").train(cases, options, SilentReporter())
    assert segmenter.network_config.class_members == (1, 2)
    loaded = load_segmenter(segmenter.save(tmp_path / "model"))
    assert loaded.network_config.class_members == (1, 2)
    image = cases[0].image
    _, probabilities = loaded.predict(image)
    members = member_probabilities(loaded, image)  # each member's own softmax, run as the ensemble runs it
    averaged = np.mean(members, axis=0)
    np.testing.assert_allclose(probabilities[0], averaged[0], atol=1e-5)  # the object from all three
    expected = split_by(averaged, members[1] + members[2])
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)  # the split from axes 1 and 2 alone
    assert not np.allclose(probabilities, averaged, atol=1e-3)  # ... which is not the plain average


def test_each_class_keeps_its_counted_parts_and_a_stray_island_takes_the_other_class():
    from SparseSegLib.engine.postprocess import class_part_counts, kept_class_parts, postprocess_labels

    labels = np.zeros((1, 5, 12), np.uint8)
    labels[0, :, 0:5], labels[0, :, 5:10] = 1, 2  # the object: class 1 then class 2
    labels[0, 2, 7] = 1  # an island of class 1 inside class 2
    probabilities = np.zeros((3, *labels.shape))
    probabilities[0] = 0.1
    probabilities[1][labels == 1], probabilities[2][labels == 1] = 0.6, 0.3
    probabilities[1][labels == 2], probabilities[2][labels == 2] = 0.3, 0.6
    probabilities[0][labels == 0] = 0.9
    kept = kept_class_parts(labels, probabilities, (1, 1))
    assert kept[0, 2, 7] == 2 and ((kept > 0) == (labels > 0)).all()  # the island changes class, the object stays
    assert (kept[..., 0:5] == 1).all() and (kept[..., 5:10] == 2).all()
    assert (kept_class_parts(labels, probabilities, (2, 1)) == labels).all()  # two parts of class 1 allowed
    assert class_part_counts([labels], 3) == (1, 1)  # the island is under 5% of class 1's voxels
    two = np.zeros((1, 3, 12), np.int16)
    two[0, :, 0:3], two[0, :, 8:11], two[0, :, 4:7] = 1, 1, 2
    two[0, 0, 3] = -1  # unknown voxels join parts, they do not split them
    assert class_part_counts([two], 3) == (2, 1)
    assert (postprocess_labels(labels, probabilities, "lcc-fill", 1, None, (1, 1)) == kept).all()
    assert (postprocess_labels(labels, probabilities, "fill", 1, None, (1, 1)) == labels).all()  # only with lcc


def test_class_parts_auto_goes_with_class_axes_and_the_model_keeps_the_counts(sample_dataset, tmp_path):
    improved = CollaborativeSettings.parse({}, IMPROVED)
    assert improved.class_parts == "auto" and improved.counts_class_parts(140, 3)
    assert not improved.counts_class_parts(1, 3) and not improved.counts_class_parts(140, 2)
    assert not CollaborativeSettings.parse({"class_parts": "off"}, IMPROVED).counts_class_parts(140, 3)
    assert not CollaborativeSettings.parse({"postprocess": "fill"}, IMPROVED).counts_class_parts(140, 3)
    assert CollaborativeSettings.parse({"class_axes": "all", "class_parts": "on"}, IMPROVED).counts_class_parts(1, 3)
    with pytest.raises(SparseSegError, match="class_parts"):
        CollaborativeSettings.parse({"class_parts": "largest"}, IMPROVED).check()
    cases = [annotate_case(sample_dataset.load(ref), "central-slice", 0) for ref in sample_dataset.cases[:2]]
    options = MethodOptions(device="cpu", iterations=10, batch_size=4,
                            extra=dict(registration="demons", demons_iterations=5, branches="registration",
                                       fusion="intersection", final_axes="0,1,2", pseudo_classes="ground-truth",
                                       class_axes="auto", class_parts="auto", postprocess="lcc-fill"))
    segmenter = get_method("collaborative").train(cases, options, SilentReporter())
    assert len(segmenter.class_parts) == 2 and min(segmenter.class_parts) >= 1
    assert segmenter.training["final"]["class_parts"] == list(segmenter.class_parts)
    loaded = load_segmenter(segmenter.save(tmp_path / "model"))
    assert loaded.class_parts == segmenter.class_parts
    labels, _ = loaded.predict(cases[0].image)
    assert (labels == segmenter.predict(cases[0].image)[0]).all()
