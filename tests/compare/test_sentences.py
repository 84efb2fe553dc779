"""The sentences and the break-even follow from the numbers only: hand-made compare.json arms."""
from __future__ import annotations

import pytest

from tunelab.compare.sentences import break_even, break_even_sentence, sentences, significant


def arm(aid, method, value, delta=0.0, ci=(0.0, 0.0), p=1.0, *, k=None, train=None, infer=(1000.0, 40_000, 6_000)):
    wall, prompt, gen = infer
    return {"id": aid, "method": method, "k": k, "metric": {"value": value, "ci95": [value - 0.1, value + 0.1]},
            "diff_vs_best": {"delta": delta, "ci95": list(ci), "p": p},
            "train_cost": train, "infer_cost_per_1k": {"wall_s": wall, "prompt_tokens": prompt, "generated_tokens": gen}}


def summary(arms, best, higher=True):
    s = {"arms": arms, "best": best, "main_metric": "exact_match", "n_items": 50,
         "break_even": break_even(arms, higher)}
    s["sentences"] = sentences(s)
    return s


def test_significance_needs_p_and_ci_to_agree():
    assert significant({"delta": -0.3, "ci95": [-0.5, -0.1], "p": 0.01})
    assert not significant({"delta": -0.3, "ci95": [-0.5, 0.02], "p": 0.04})  # CI touches 0
    assert not significant({"delta": -0.3, "ci95": [-0.5, -0.1], "p": 0.05})  # p not below 0.05
    assert not significant(None)


def test_significant_win_names_winner_margin_and_runner_up():
    arms = [arm("lora-n256", "lora", 0.85, train={"wall_s": 100.0, "tokens": 15_000}, infer=(900.0, 30_000, 6_000)),
            arm("few_shot-k3-random", "few_shot", 0.40, -0.45, (-0.62, -0.28), 0.001, k=3, infer=(1500.0, 90_000, 6_000)),
            arm("zero_shot", "zero_shot", 0.10, -0.75, (-0.9, -0.6), 0.001, k=0)]
    s = summary(arms, "lora-n256")
    first = s["sentences"][0]
    assert first.startswith("lora-n256 wins with exact_match 0.850")
    assert "runner-up few_shot-k3-random by 0.450" in first and "p = 0.001" in first
    assert "also significantly better than zero_shot" in first
    assert "not significantly" not in " ".join(s["sentences"])


def test_tie_is_not_called_a_win():
    arms = [arm("few_shot-k3-random", "few_shot", 0.50, k=3),
            arm("lora-n64", "lora", 0.45, -0.05, (-0.2, 0.1), 0.52, train={"wall_s": 50.0, "tokens": 4_000}),
            arm("zero_shot", "zero_shot", 0.10, -0.40, (-0.55, -0.25), 0.001, k=0)]
    text = " ".join(summary(arms, "few_shot-k3-random")["sentences"])
    assert "wins" not in text
    assert "not significantly better than lora-n64" in text
    assert "no winner among them" in text
    assert "significantly better than zero_shot" in text


def test_fine_tune_never_repaid_when_its_queries_cost_more():
    # a fine-tune whose outputs ramble: more tokens and more seconds per query than the 3-shot arm
    arms = [arm("lora-n32", "lora", 0.6, train={"wall_s": 80.0, "tokens": 9_000}, infer=(2000.0, 30_000, 70_000)),
            arm("few_shot-k3-random", "few_shot", 0.6, 0.0, (-0.1, 0.1), 1.0, k=3, infer=(1500.0, 90_000, 6_000))]
    be = break_even(arms)
    assert be["fine_tuned"] == "lora-n32" and be["few_shot"] == "few_shot-k3-random"
    assert be["queries_tokens"] is None and be["queries_seconds"] is None
    text = break_even_sentence(be)
    assert "never repaid in tokens" in text and "never repaid in seconds" in text


def test_break_even_counts_queries_in_tokens_and_seconds():
    arms = [arm("lora-n256", "lora", 0.85, train={"wall_s": 100.0, "tokens": 15_000}, infer=(900.0, 30_000, 6_000)),
            arm("few_shot-k3-random", "few_shot", 0.40, -0.45, (-0.62, -0.28), 0.001, k=3, infer=(1500.0, 90_000, 6_000))]
    be = break_even(arms)
    assert be["saved_tokens_per_query"] == pytest.approx(60.0)  # (96k - 36k) / 1000
    assert be["queries_tokens"] == 250  # 15,000 / 60
    assert be["saved_seconds_per_query"] == pytest.approx(0.6)
    assert be["queries_seconds"] == 167  # ceil(100 / 0.6)
    text = break_even_sentence(be)
    assert "repaid after 250 queries in tokens" in text and "repaid after 167 queries in seconds on this machine" in text


def test_break_even_needs_both_kinds_of_arm():
    only_tuned = [arm("lora-n8", "lora", 0.3, train={"wall_s": 5.0, "tokens": 100}),
                  arm("zero_shot", "zero_shot", 0.1, -0.2, (-0.4, 0.0), 0.2, k=0)]
    assert break_even(only_tuned) is None
    s = summary(only_tuned, "lora-n8")
    assert any("no few-shot arm" in x for x in s["sentences"])


def test_lower_is_better_metric_picks_the_lowest_fine_tune():
    arms = [arm("full-n64", "full", 12.0, train={"wall_s": 9.0, "tokens": 50}, infer=(100.0, 1000, 0)),
            arm("lora-n64", "lora", 8.0, train={"wall_s": 5.0, "tokens": 40}, infer=(100.0, 1000, 0)),
            arm("few_shot-k1-random", "few_shot", 9.0, k=1, infer=(200.0, 3000, 0))]
    assert break_even(arms, higher_is_better=False)["fine_tuned"] == "lora-n64"


def test_single_arm_says_there_is_nothing_to_compare():
    s = summary([arm("zero_shot", "zero_shot", 0.2, k=0)], "zero_shot")
    assert s["sentences"] == ["Only one arm ran (zero_shot: exact_match 0.200 (95% CI 0.100 to 0.300)); "
                              "there is nothing to compare it with."]


def test_equal_scores_name_no_winner():
    arms = [arm("zero_shot", "zero_shot", 0.0, k=0), arm("lora-n8", "lora", 0.0, train={"wall_s": 1.0, "tokens": 9})]
    assert summary(arms, "zero_shot")["sentences"][0] == ("All 2 arms score exact_match 0.000 on these 50 test items: "
                                                          "no arm is better than another.")


def test_a_stated_gap_carries_the_interval_of_that_same_gap():
    """Issue 26 case 8: 'the gap to X is 0.125' came with the CI of X minus the best (-0.375 to 0.000)."""
    arms = [arm("lora-n64", "lora", 0.50, train={"wall_s": 50.0, "tokens": 4_000}),
            arm("zero_shot", "zero_shot", 0.375, -0.125, (-0.375, 0.0), 0.08, k=0)]
    text = " ".join(summary(arms, "lora-n64")["sentences"])
    assert "The gap to zero_shot is 0.125 (difference 95% CI 0.000 to 0.375" in text
    arms = [arm("lora-n256", "lora", 0.90, train={"wall_s": 50.0, "tokens": 4_000}),
            arm("few_shot-k3-random", "few_shot", 0.725, -0.175, (-0.300, -0.050), 0.01, k=3)]
    text = " ".join(summary(arms, "lora-n256")["sentences"])
    assert "ahead of the runner-up few_shot-k3-random by 0.175 (difference 95% CI 0.050 to 0.300" in text
    # lower is better: the other arm's delta is positive, stated as it is
    arms = [arm("lora-n64", "lora", 2.0, train={"wall_s": 50.0, "tokens": 4_000}),
            arm("zero_shot", "zero_shot", 2.5, 0.5, (0.2, 0.8), 0.001, k=0)]
    text = " ".join(summary(arms, "lora-n64", higher=False)["sentences"])
    assert "by 0.500 (difference 95% CI 0.200 to 0.800" in text


@pytest.mark.parametrize("losses, falling", [
    ([3.0 - 0.1 * i for i in range(16)], True),  # still dropping 0.4 nats a quarter: undertrained
    ([2.0, 1.0, 0.5, 0.2] + [0.1] * 12, False),  # flat at the end
    ([0.2, 0.15, 0.1, 0.09, 0.08, 0.07, 0.06, 0.05], False),  # memorising: -30% but only 0.02 nats
    ([3.0, 2.0, 1.0], None),  # too few steps to tell
])
def test_loss_trend(losses, falling):
    from tunelab.compare.sentences import loss_trend

    assert loss_trend(losses)["still_falling"] is falling


def test_training_warnings_name_the_arm_and_the_fix():
    from tunelab.compare.sentences import training_warnings

    arms = [{"id": "lora-n128", "training": {"steps": 2}},
            {"id": "lora-n800", "training": {"steps": 96, "still_falling": True, "loss_q3": 2.1, "loss_q4": 1.7}},
            {"id": "lora-n64", "training": {"steps": 64, "still_falling": False}}, {"id": "zero_shot"}]
    out = training_warnings(arms)
    assert len(out) == 2
    assert out[0].startswith("lora-n128 trained for only 2 optimizer step(s)")
    assert out[1].startswith("lora-n800's training loss was still falling steeply at its last step (2.100 to 1.700")


def test_a_dpo_run_that_fitted_its_pairs_is_not_called_undertrained():
    """A preference loss falls toward 0 as the pairs are memorised: with them ranked right, more
    epochs are not the advice; a run that has not fitted them gets the usual one."""
    from tunelab.compare.sentences import training_warnings

    fitted = {"steps": 96, "still_falling": True, "loss_q3": 0.534, "loss_q4": 0.470, "train_reward_acc_q4": 1.0}
    out = training_warnings([{"id": "dpo-n128", "training": fitted},
                             {"id": "orpo-n128", "training": {**fitted, "train_reward_acc_q4": 0.39}}])
    assert out[0] == ("dpo-n128's loss was still falling at its last step (0.534 to 0.470 over the last two quarters "
                      "of its 96 optimizer steps), but it already ranked 100% of its training pairs right there "
                      "(rewards/accuracies): more epochs would fit those pairs harder; more pairs are what could "
                      "change this table.")
    assert out[1].startswith("orpo-n128's training loss was still falling steeply") and "epochs" in out[1]
