from __future__ import annotations

import numpy as np
import pytest
from zerolabel.evaluation.clusters import hungarian_accuracy, nmi, purity
from zerolabel.loop.clustering import (
    Whitening,
    apply_mapping,
    assign,
    cluster_names,
    cluster_objects,
    fit_kmeans,
    suggest_k,
    whiten,
)


def planted_blobs(
    groups: int = 4, per_group: int = 20, dim: int = 64, noise: float = 0.05, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """[groups * per_group, dim] descriptors around random centres, shuffled; and their group.

    The centres share a large common offset, the way CLS outputs of one ViT do: whitening
    removes it.
    """
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(groups, dim)) + 5.0
    truth = rng.permutation(np.repeat(np.arange(groups), per_group))
    descriptors = centres[truth] + noise * rng.normal(size=(truth.size, dim))
    return descriptors, truth


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """True when a and b group the items identically, whatever the label values."""
    same_a = np.asarray(a)[:, None] == np.asarray(a)[None, :]
    same_b = np.asarray(b)[:, None] == np.asarray(b)[None, :]
    return bool(np.array_equal(same_a, same_b))


def test_whitened_rows_are_unit_norm_and_dimensions_standardised():
    descriptors, _ = planted_blobs()
    descriptors[:, 3] = 0.0  # constant even after the rows are L2-normalised
    whitened, whitening = whiten(descriptors)
    assert whitened.shape == descriptors.shape
    np.testing.assert_allclose(np.linalg.norm(whitened, axis=1), 1.0, rtol=1e-12)
    assert isinstance(whitening, Whitening)
    assert whitening.std[3] == pytest.approx(0.0, abs=1e-15)
    assert np.all(whitened[:, 3] == 0.0)
    # Before the final normalisation each varying dimension has mean 0 and std 1.
    unit = descriptors / np.linalg.norm(descriptors, axis=1, keepdims=True)
    varying = np.arange(descriptors.shape[1]) != 3
    standard = (unit[:, varying] - whitening.mean[varying]) / whitening.std[varying]
    np.testing.assert_allclose(standard.mean(axis=0), 0.0, atol=1e-9)
    np.testing.assert_allclose(standard.std(axis=0), 1.0, rtol=1e-9)
    np.testing.assert_allclose(whitening.apply(descriptors), whitened)


def test_whitening_ignores_the_scale_of_each_descriptor():
    descriptors, _ = planted_blobs(seed=1)
    whitened, whitening = whiten(descriptors)
    np.testing.assert_allclose(whitening.apply(descriptors * 3.5), whitened, atol=1e-12)


@pytest.mark.parametrize(
    ("groups", "seed"),
    [pytest.param(4, 0, id="four-blobs"), pytest.param(6, 1, id="six-blobs")],
)
def test_kmeans_recovers_planted_groups(groups, seed):
    descriptors, truth = planted_blobs(groups=groups, seed=seed)
    whitened, _ = whiten(descriptors)
    found = fit_kmeans(whitened, groups, seed=seed)
    assert found.centroids.shape == (groups, descriptors.shape[1])
    assert same_partition(found.labels, truth)
    assert purity(found.labels, truth) == 1.0
    assert nmi(found.labels, truth) == pytest.approx(1.0)
    assert hungarian_accuracy(found.labels, truth) == 1.0
    np.testing.assert_array_equal(assign(whitened, found.centroids), found.labels)


def test_cluster_ids_follow_first_appearance():
    descriptors, _ = planted_blobs()
    labels = fit_kmeans(whiten(descriptors)[0], 4).labels
    first_seen = list(dict.fromkeys(labels.tolist()))
    assert first_seen == [0, 1, 2, 3]


def test_fixed_seed_gives_identical_labels():
    descriptors, _ = planted_blobs(groups=5, noise=0.6, seed=2)  # overlapping: init matters
    whitened, _ = whiten(descriptors)
    first, second = fit_kmeans(whitened, 5, seed=7), fit_kmeans(whitened, 5, seed=7)
    np.testing.assert_array_equal(first.labels, second.labels)
    np.testing.assert_array_equal(first.centroids, second.centroids)
    assert first.inertia == second.inertia


def test_kmeans_refuses_more_clusters_than_distinct_objects():
    x = np.repeat(np.eye(3), 4, axis=0)  # 12 rows, 3 distinct
    with pytest.raises(ValueError, match="3 distinct"):
        fit_kmeans(x, 4)
    with pytest.raises(ValueError, match="k = 0"):
        fit_kmeans(x, 0)


@pytest.mark.parametrize("groups", [pytest.param(3, id="k3"), pytest.param(5, id="k5")])
def test_suggest_k_finds_the_planted_number(groups):
    descriptors, _ = planted_blobs(groups=groups, per_group=12, seed=groups)
    whitened, _ = whiten(descriptors)
    assert suggest_k(whitened, range(2, 9)) == groups


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        pytest.param(np.ones((1, 4)), 1, id="one-object"),
        pytest.param(np.eye(4)[:2], 1, id="two-objects"),
        pytest.param(np.ones((6, 4)), 1, id="all-alike"),
        pytest.param(np.eye(4)[:3], 2, id="three-objects"),
    ],
)
def test_suggest_k_on_tiny_datasets(rows, expected):
    assert suggest_k(rows) == expected


def test_suggest_k_subsamples_large_datasets(monkeypatch):
    import zerolabel.loop.clustering as clustering

    monkeypatch.setattr(clustering, "SILHOUETTE_SAMPLES", 30)
    descriptors, _ = planted_blobs(groups=3, per_group=40, seed=4)
    assert suggest_k(whiten(descriptors)[0], range(2, 6)) == 3


def test_labels_stay_with_their_objects_when_some_descriptors_fail():
    # Two groups alternating A, B, A, B...; objects 1 and 4 fail. Clustering the survivors and
    # handing their labels out by position over all ids (LOST's cluster_for_OD.py) shifts every
    # label after the first failure.
    rng = np.random.default_rng(5)
    group = np.array([0, 1, 0, 1, 0, 1, 0, 1])
    rows = rng.normal(size=(2, 64))[group] + 0.01 * rng.normal(size=(8, 64))
    ids = [f"img{i // 3}/obj{i}" for i in range(8)]
    failed = {1, 4}
    items = [(ids[i], None if i in failed else rows[i]) for i in range(8)]

    result = cluster_objects(items, k=2)

    assert list(result.labels) == ids  # every id, in input order
    assert [result.labels[ids[i]] for i in sorted(failed)] == [None, None]
    kept = [i for i in range(8) if i not in failed]
    got = [result.labels[ids[i]] for i in kept]
    assert None not in got
    assert same_partition(np.array(got), group[kept])
    naive = {ids[j]: label for j, label in enumerate(got)}  # survivor j's label to id j
    shifted = [i for i in kept if ids[i] in naive]
    assert not same_partition(np.array([naive[ids[i]] for i in shifted]), group[shifted])


def test_cluster_objects_names_and_assigns_new_objects():
    descriptors, truth = planted_blobs(groups=3, per_group=10, seed=6)
    result = cluster_objects(list(enumerate(descriptors)), k=None, k_range=range(2, 6))
    assert result.names == ["cluster_00", "cluster_01", "cluster_02"]
    labels = [result.labels[i] for i in range(len(truth))]
    assert hungarian_accuracy(labels, truth) == 1.0
    assert result.assign_names(descriptors[:5]) == labels[:5]


@pytest.mark.parametrize(
    ("items", "message"),
    [
        pytest.param([("a", np.ones(3)), ("a", np.ones(3))], "duplicate object ids: a", id="dup"),
        pytest.param([("a", None), ("b", None)], "none of the 2", id="all-failed"),
        pytest.param([("a", np.ones(3)), ("b", np.ones(4))], "objects b", id="shapes"),
        pytest.param([("a", np.ones(3)), ("b", np.full(3, np.nan))], "objects b", id="nan"),
    ],
)
def test_cluster_objects_rejects_bad_input(items, message):
    with pytest.raises(ValueError, match=message):
        cluster_objects(items, k=1)


def test_cluster_names_sort_in_order():
    assert cluster_names(3) == ["cluster_00", "cluster_01", "cluster_02"]
    names = cluster_names(120)
    assert names[5] == "cluster_005" and sorted(names) == names


def test_mapping_renames_merges_and_keeps_the_rest():
    labels = ["cluster_00", "cluster_01", None, "cluster_02", "cluster_03", "cluster_00"]
    mapping = {"cluster_00": "dog", "cluster_03": "dog", "cluster_01": "cat"}
    assert apply_mapping(labels, mapping) == ["dog", "cat", None, "cluster_02", "dog", "dog"]


def test_mapping_is_applied_once_not_chained():
    assert apply_mapping(["a", "b"], {"a": "b", "b": "c"}) == ["b", "c"]


def test_mapping_rejects_unknown_clusters_by_name():
    with pytest.raises(ValueError, match="cluster_07, cluster_9"):
        apply_mapping(["cluster_00"], {"cluster_9": "dog", "cluster_07": "cat"})
    with pytest.raises(ValueError, match="empty name"):
        apply_mapping(["cluster_00"], {"cluster_00": ""})


def test_metrics_are_invariant_to_cluster_renaming():
    truth = np.array(["cat", "cat", "dog", "dog", "bird", "bird"])
    permuted = np.array([2, 2, 0, 0, 1, 1])
    assert hungarian_accuracy(permuted, truth) == 1.0
    assert purity(permuted, truth) == 1.0
    assert nmi(permuted, truth) == pytest.approx(1.0)


def test_hungarian_accuracy_maps_one_cluster_per_class():
    truth = [0, 0, 0, 1, 1, 1]
    one_cluster = [5, 5, 5, 5, 5, 5]
    assert purity(one_cluster, truth) == pytest.approx(0.5)
    assert hungarian_accuracy(one_cluster, truth) == pytest.approx(0.5)
    split = [0, 1, 2, 3, 3, 3]  # over-segmented class 0: pure, but only one part maps
    assert purity(split, truth) == 1.0
    assert hungarian_accuracy(split, truth) == pytest.approx(4 / 6)
    assert nmi(one_cluster, truth) == pytest.approx(0.0)


def test_metrics_refuse_mismatched_lengths():
    with pytest.raises(ValueError, match="equal length"):
        purity([0, 1], [0, 1, 1])
