"""The diversity floor: zero for varied samples, a push apart for alike ones, its gradient exact,
its two spaces, the data range, its target from the data, its gate and its schedule."""
import numpy as np
import pytest

import nanostyle as ns
from nanostyle.data import to_float
from nanostyle.diversity import DiversityConfig, DiversityFloor, data_pair_distance
from nanostyle.gradcheck import check_backward
from nanostyle.metrics import image_gradients, mean_pair_distance


def floor_of(weight=2.0, target=0.5, space="pixels", until_kimg=0.0, gate_kimg=0.0, batch=4):
    config = DiversityConfig(weight=weight, until_kimg=until_kimg, gate_kimg=gate_kimg, space=space)
    return DiversityFloor(config, target, batch)


def test_zero_for_varied_images_and_a_push_apart_for_alike_ones():
    floor = floor_of(target=0.5)
    rng = np.random.default_rng(4)
    varied = rng.uniform(-1, 1, (4, 1, 8, 8))                 # pair distance ~0.8 > target
    term, stats = floor.term(ns.Tensor(varied))
    assert term is None and stats["loss_diversity"] == 0.0 and stats["pair_distance"] > 1
    base = rng.uniform(-1, 1, (1, 1, 8, 8))
    alike = ns.Tensor(base + 0.05 * rng.standard_normal((4, 1, 8, 8)), requires_grad=True)
    term, stats = floor.term(alike)
    assert 0 < stats["pair_distance"] < 0.5 and stats["loss_diversity"] == pytest.approx(2.0 * (1 - stats["pair_distance"]))
    (g,) = ns.grad(term, [alike])
    # a small step against the gradient moves each pair apart, so the term falls
    stepped, _ = floor.term(ns.Tensor(alike.data - 0.01 * g.data))
    assert stepped.item() < term.item()


def test_a_closed_floor_still_reports_the_distance():
    floor = floor_of(target=0.5)
    rng = np.random.default_rng(6)
    alike = ns.Tensor(rng.uniform(-1, 1, (1, 1, 8, 8)) + 0.05 * rng.standard_normal((4, 1, 8, 8)))
    floor.mean = 1.2                                          # the gate says: varied enough
    floor.schedule(0)
    term, stats = floor.term(alike)
    assert term is None and stats["loss_diversity"] == 0.0 and 0 < stats["pair_distance"] < 0.5
    floor.mean = 0.8
    floor.schedule(0)
    term, stats = floor.term(alike)
    assert term is not None and stats["loss_diversity"] > 0


def test_gradient_matches_finite_differences():
    floor = floor_of(weight=1.5, target=3.0)                 # target above any distance: term active
    x = np.random.default_rng(5).uniform(-1, 1, (6, 1, 4, 4))
    check_backward(lambda img: floor.term(img)[0], [x])


def test_gradients_space_measures_structure_not_brightness():
    rng = np.random.default_rng(7)
    x = rng.uniform(-0.8, 0.8, (6, 1, 8, 9))
    floor = floor_of(weight=1.0, target=1.0, space="gradients")
    _, stats = floor.term(ns.Tensor(x))
    f = image_gradients(x)
    assert stats["pair_distance"] == pytest.approx(np.sqrt(((f[:3] - f[3:]) ** 2).mean(axis=1) + 1e-8).mean())
    # a different brightness or background level per image, within the data range: no distance bought
    shifted = x + rng.uniform(-0.15, 0.15, (6, 1, 1, 1))
    assert floor.term(ns.Tensor(shifted))[1]["pair_distance"] == pytest.approx(stats["pair_distance"])
    _, pixels = floor_of(weight=1.0, target=1.0).term(ns.Tensor(shifted))
    _, pixels_before = floor_of(weight=1.0, target=1.0).term(ns.Tensor(x))
    assert pixels["pair_distance"] != pytest.approx(pixels_before["pair_distance"], rel=1e-3)   # in pixels it is
    check_backward(lambda img: floor_of(weight=1.5, target=30.0, space="gradients").term(img)[0],
                   [rng.uniform(-1, 1, (4, 1, 4, 5))])


def test_no_distance_counts_outside_the_data_range():
    floor = floor_of(weight=1.0, target=0.5)
    rng = np.random.default_rng(6)
    base = rng.uniform(-1, 1, (2, 1, 8, 8))
    darker = base.copy()
    darker[:, :, :3] = -1.0                                    # black background rows ...
    x = np.concatenate([darker, darker])
    x[2:, :, :3] = rng.uniform(-2.0, -1.2, (2, 1, 3, 8))       # ... and "darker than black" ones
    img = ns.Tensor(x, requires_grad=True)
    term, stats = floor.term(img)
    assert stats["pair_distance"] == pytest.approx(0.0, abs=1e-3) and term.item() == pytest.approx(1.0, abs=1e-3)
    (g,) = ns.grad(term, [img])
    assert np.all(g.data[2:, :, :3] == 0)                     # no gradient pushes further out of range


def test_target_is_the_data_pair_distance_in_the_floor_space():
    rng = np.random.default_rng(8)
    images = rng.integers(0, 256, (9, 1, 6, 7), dtype=np.uint8)
    floats = to_float(images)
    assert data_pair_distance(images) == pytest.approx(mean_pair_distance(floats), rel=1e-12)
    assert data_pair_distance(images, "gradients") == pytest.approx(mean_pair_distance(image_gradients(floats)))
    # a large set stands by a random subset, drawn as metrics.mean_pair_distance draws it
    many = rng.integers(0, 256, (40, 1, 4, 4), dtype=np.uint8)
    assert data_pair_distance(many, max_images=16) == pytest.approx(mean_pair_distance(to_float(many), max_images=16))
    floor = DiversityFloor.from_data(DiversityConfig(weight=1.0, until_kimg=0.0), images, batch=4)
    assert floor.target == pytest.approx(mean_pair_distance(floats))


def test_settings_are_checked_and_a_target_is_required():
    for config, match in ((DiversityConfig(weight=-1.0, until_kimg=0.0), "--diversity -1: .* must be >= 0"),
                          (DiversityConfig(weight=1.0, until_kimg=-1.0), "--diversity-until -1: must be >= 0 kimg"),
                          (DiversityConfig(weight=1.0, until_kimg=0.0, gate_kimg=-1.0), "--diversity-gate -1"),
                          (DiversityConfig(weight=1.0, until_kimg=0.0, space="edges"), "'pixels' or 'gradients'")):
        with pytest.raises(ValueError, match=match):
            DiversityFloor(config, 0.5, batch=4)
    with pytest.raises(ValueError, match="positive target"):
        floor_of(target=None)


def test_the_gate_follows_the_running_mean_not_one_batch():
    floor = floor_of(gate_kimg=0.16, batch=16)                # half-life: 10 batches of 16
    floor.observe({"pair_distance": 0.8}, 16)
    assert floor.mean == 0.8 and floor.open                   # first batch: the mean is it
    for _ in range(60):                                       # samples spread out
        floor.observe({"pair_distance": 1.3}, 16)
    assert 1.25 < floor.mean < 1.3 and not floor.open
    floor.observe({"pair_distance": 0.5}, 16)                 # one close batch: noise
    assert floor.mean > 1.2 and not floor.open
    steps = 0
    while not floor.open:                                     # a lasting fall: collapse
        floor.observe({"pair_distance": 0.6}, 16)
        steps += 1
    assert 5 <= steps <= 15 and floor.mean < 1.0
    stats = {"pair_distance": 0.6}
    floor.observe(stats, 16)
    assert stats["pair_distance_mean"] == floor.mean          # logged with the stats
    ungated = floor_of(gate_kimg=0.0, batch=16)               # no gate: every batch judged alone, nothing kept
    for ratio in (1.3, 1.3, 1.3):
        ungated.observe({"pair_distance": ratio}, 16)
    assert ungated.mean is None and ungated.open


def test_the_schedule_closes_the_floor_for_good_and_says_so_once():
    def open_at(kimg, until, mean=None):
        floor = floor_of(until_kimg=until, batch=16)
        floor.mean = mean
        floor.schedule(int(kimg * 1000))
        return floor.open

    assert open_at(39.984, 40.0) and not open_at(40.0, 40.0) and not open_at(52.0, 40.0)
    assert not open_at(20.0, 40.0, mean=1.2) and open_at(20.0, 40.0, mean=0.9)   # the gate still rules before
    assert not open_at(41.0, 40.0, mean=0.3)                                     # ...and nothing opens it after
    assert open_at(500.0, 0.0) and not open_at(500.0, 0.0, mean=1.1)             # 0: the whole run
    floor = floor_of(until_kimg=0.048, batch=16)
    messages = [floor.observe({}, nimg) for nimg in range(16, 97, 16)]
    assert [m is not None for m in messages] == [False, False, True, False, False, False]
    assert messages[2].startswith("diversity floor: off from 0.048 kimg (--diversity-until 0.048)")
    state = floor.state_dict()
    resumed = floor_of(until_kimg=0.048, batch=16)
    resumed.load_state_dict(state, cur_nimg=96)
    assert not resumed.open


# ---- per class (conditional runs) ----------------------------------------------------------------

def test_same_class_pairs_pair_each_class_s_halves_and_reduce_to_the_plain_pairing():
    from nanostyle.diversity import same_class_pairs
    first, second = same_class_pairs(np.array([1, 0, 1, 1, 0, 0, 1, 0, 2]))
    assert sorted(zip(first.tolist(), second.tolist())) == [(0, 3), (1, 5), (2, 6), (4, 7)]   # class 2: no pair
    first, second = same_class_pairs(np.zeros(6, np.int64))
    assert first.tolist() == [0, 1, 2] and second.tolist() == [3, 4, 5]      # as pair_distance: i with i + N/2


def test_per_class_floor_pairs_within_classes_against_each_class_s_target():
    config = DiversityConfig(weight=2.0, until_kimg=0.0, gate_kimg=0.0, space="pixels")
    rng = np.random.default_rng(8)
    # class 0 images are alike among themselves, class 1 images vary; across classes they differ a lot
    class0 = rng.uniform(-1, 1, (1, 1, 8, 8)) + 0.05 * rng.standard_normal((4, 1, 8, 8))
    class1 = rng.uniform(-1, 1, (4, 1, 8, 8))
    images = np.concatenate([class0, class1])
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    c = ns.Tensor(np.eye(2)[labels])
    targets = [0.5, 0.6]
    floor = DiversityFloor(config, targets, 8, ["AD", "NC"])
    term, stats = floor.term(ns.Tensor(images), c)
    rms = lambda a, b: np.sqrt(((np.clip(a, -1, 1) - np.clip(b, -1, 1)) ** 2).mean() + 1e-8)   # the data range
    expected = np.mean([rms(images[0], images[2]) / 0.5, rms(images[1], images[3]) / 0.5,
                        rms(images[4], images[6]) / 0.6, rms(images[5], images[7]) / 0.6])
    assert stats["pair_distance"] == pytest.approx(expected)
    assert stats["loss_diversity"] == pytest.approx(2.0 * (1 - expected)) and term is not None
    # the plain floor pairs rows i and i + 4 across classes, and sees no collapse of class 0
    assert floor_of(target=0.55, batch=8).term(ns.Tensor(images))[1]["pair_distance"] > 1
    check_backward(lambda img: floor.term(img, c)[0], [images])
    assert "targets AD 0.500, NC 0.600" in floor.describe()
    with pytest.raises(ValueError, match="needs the labels c"):
        floor.term(ns.Tensor(images))


def test_per_class_targets_come_from_each_class_s_images():
    rng = np.random.default_rng(9)
    images = (rng.uniform(0, 255, (10, 1, 8, 8))).astype(np.uint8)
    images[5:] = images[5] // 2 + rng.integers(0, 3, (5, 1, 8, 8)).astype(np.uint8)     # class 1: nearly one image
    labels = np.array([0] * 5 + [1] * 5)
    config = DiversityConfig(weight=1.0, until_kimg=0.0)
    floor = DiversityFloor.from_data(config, images, 4, labels, ["AD", "NC"])
    assert floor.targets[0] == pytest.approx(mean_pair_distance(to_float(images[:5])))
    assert floor.targets[1] == pytest.approx(mean_pair_distance(to_float(images[5:])))
    assert floor.targets[1] < 0.1 * floor.targets[0]
    with pytest.raises(ValueError, match="at least 2 training images of class 'NC', found 1"):
        DiversityFloor.from_data(config, images[:6], 4, labels[:6], ["AD", "NC"])
