"""Text and ranking metrics against values worked out by hand."""

from __future__ import annotations

import math

import pytest

from lamina.eval import metrics as M


def test_exact_match_is_strict_but_ignores_outer_whitespace():
    assert M.exact_match("  ORDER: 1; ITEM: mug\n", "ORDER: 1; ITEM: mug") == 1.0
    assert M.exact_match("order: 1; item: mug", "ORDER: 1; ITEM: mug") == 0.0


def test_token_f1_hand_computed():
    # pred tokens: cat sat on mat (the -> dropped); ref: cat is on mat -> overlap 3 of 4 and 4.
    assert M.token_f1("The cat sat on the mat.", "a cat is on the mat") == pytest.approx(0.75)
    # pred: red red kettle (3), ref: red kettle (2): overlap min-counts = red 1 + kettle 1 = 2
    # P = 2/3, R = 1, F1 = 0.8
    assert M.token_f1("red red kettle", "red kettle") == pytest.approx(0.8)
    assert M.token_f1("blue", "red") == 0.0
    assert M.token_f1("", "") == 1.0


def test_lcs_and_rouge_l_hand_computed():
    assert M.lcs_length(list("ABCBDAB"), list("BDCABA")) == 4  # the textbook CLRS example
    # pred: police killed gunman (3); ref: police kill gunman (3)? use Lin's example:
    # ref "police killed the gunman" -> police killed gunman; pred "police kill the gunman" -> police kill gunman
    # LCS = police gunman = 2; P = R = 2/3; F = 2/3
    assert M.rouge_l("police kill the gunman", "police killed the gunman") == pytest.approx(2 / 3)
    # pred 2 tokens, ref 4 tokens, LCS 2: P = 1, R = 0.5, F = 2/3
    assert M.rouge_l("order broken", "order 4821 arrived broken") == pytest.approx(2 / 3)
    assert M.rouge_l("x y", "z") == 0.0


def test_mc_correct_counts_ties_as_wrong():
    assert M.mc_correct([-3.0, -1.0, -2.0], 1) == 1.0
    assert M.mc_correct([-3.0, -1.0, -2.0], 0) == 0.0
    assert M.mc_correct([-1.0, -1.0], 0) == 0.0


def test_percentile_matches_linear_interpolation():
    xs = [1.0, 2.0, 3.0, 4.0]
    assert M.percentile(xs, 50) == pytest.approx(2.5)
    assert M.percentile(xs, 95) == pytest.approx(3.85)  # pos = 3 * 0.95 = 2.85 -> 3 + 0.85
    assert M.percentile([7.0], 95) == 7.0
    assert math.isnan(M.percentile([], 50))


def test_auc_hand_computed_with_ties():
    assert M.auc([3, 4], [1, 2]) == 1.0
    assert M.auc([1, 2], [3, 4]) == 0.0
    # pairs: (2 vs 1) win, (2 vs 2) tie, (3 vs 1) win, (3 vs 2) win -> 3.5 / 4
    assert M.auc([2, 3], [1, 2]) == pytest.approx(0.875)
    assert M.auc([5, 5, 5], [5, 5]) == pytest.approx(0.5)


def test_exposure_bits_follow_rank():
    cands = [float(-i) for i in range(1, 1024)]  # 1023 candidates, all below 0
    assert M.exposure_bits(0.0, cands) == pytest.approx(10.0)  # rank 1 of 1024
    assert M.exposure_bits(-1.5, cands) == pytest.approx(10.0 - 1.0)  # one candidate above: rank 2
    assert M.exposure_bits(-2000.0, cands) == pytest.approx(0.0)  # last
    assert M.exposure_bits(-1.0, [-1.0, -1.0, -5.0]) == pytest.approx(2 - math.log2(3))  # ties go against it
