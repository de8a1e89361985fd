"""Every metric on small fixtures computed by hand (the arithmetic is in the comments)."""

from __future__ import annotations

import numpy as np
import pytest

from router_plugins import routing_metrics as metrics
from router_plugins.routing_metrics import Point

POINTS = [Point(1, 0.5, "a"), Point(2, 0.8, "b"), Point(3, 0.7, "c"), Point(4, 0.9, "d")]


def test_upper_hull_drops_points_under_the_chord_and_stops_at_the_best() -> None:
    # (3, 0.7) lies under the chord from (2, 0.8) to (4, 0.9); (5, 0.85) comes after the best quality.
    assert metrics.upper_hull([*POINTS, Point(5, 0.85, "e")]) == [(1, 0.5), (2, 0.8), (4, 0.9)]


def test_upper_hull_keeps_the_better_of_two_points_at_one_cost() -> None:
    assert metrics.upper_hull([Point(1, 0.2, "x"), Point(1, 0.6, "y"), Point(2, 0.7, "z")]) == [(1, 0.6), (2, 0.7)]


def test_aiq_is_the_mean_height_of_the_hull_over_the_cost_range() -> None:
    # [1,2]: (0.5+0.8)/2 = 0.65; [2,4]: 2 × 0.85 = 1.7; [4,5]: flat at 0.9 → 3.25 / 4.
    assert metrics.aiq(POINTS, 1, 5) == pytest.approx(0.8125)
    # Left of the hull it is flat at its first point: [0,1] adds 0.5 → 3.75 / 5.
    assert metrics.aiq(POINTS, 0, 5) == pytest.approx(0.75)
    assert metrics.aiq(POINTS, 2, 2) is None


def test_oracle_takes_the_best_quality_and_the_cheapest_of_ties() -> None:
    quality = np.array([[1, 1, 0], [0, 0.5, 0.5]])
    cost = np.array([[3, 1, 2], [1, 2, 1.5]])
    assert metrics.oracle(quality, cost) == pytest.approx((0.75, 1.25))
    assert metrics.oracle(quality, np.full_like(cost, np.nan)) == (0.75, None)


def test_quality_at_cost_and_cost_to_match() -> None:
    assert metrics.quality_at_cost(POINTS, 3) == 0.8
    assert metrics.quality_at_cost(POINTS, 0.5) is None
    assert metrics.cost_to_match(POINTS, 0.8, 4) == pytest.approx(0.5)
    assert metrics.cost_to_match(POINTS, 0.95, 4) is None


def test_oracle_gap_captured() -> None:
    assert metrics.oracle_gap_captured(0.8, 0.7, 0.9) == pytest.approx(0.5)
    assert metrics.oracle_gap_captured(0.8, 0.9, 0.9) is None
    assert metrics.oracle_gap_captured(None, 0.7, 0.9) is None


def test_apgr_and_cpt() -> None:
    strong = np.array([1.0, 1, 0, 1])
    weak = np.array([0.0, 1, 0, 0])
    preference = np.array([0.9, 0.1, 0.5, 0.3])
    # Order: prompts 0, 2, 3, 1 go to the strong model first; gains 1, 0, 1, 0 over the weak model's 1/4.
    # Quality at 0..4 calls to strong: .25 .5 .5 .75 .75 → PGR 0 .5 .5 1 1.
    x, pgr = metrics.pgr_curve(preference, strong, weak)
    assert x.tolist() == [0, 0.25, 0.5, 0.75, 1]
    assert pgr.tolist() == pytest.approx([0, 0.5, 0.5, 1, 1])
    # Trapezoids: .0625 + .125 + .1875 + .25.
    assert metrics.apgr(x, pgr) == pytest.approx(0.625)
    assert metrics.cpt(x, pgr, 0.5) == 0.25
    assert metrics.cpt(x, pgr, 0.8) == 0.75


def test_a_random_order_has_apgr_near_one_half() -> None:
    rng = np.random.default_rng(0)
    strong, weak = (rng.random(4000) < 0.8).astype(float), (rng.random(4000) < 0.5).astype(float)
    x, pgr = metrics.pgr_curve(rng.random(4000), strong, weak)
    assert metrics.apgr(x, pgr) == pytest.approx(0.5, abs=0.05)
