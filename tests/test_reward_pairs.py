"""RewardScorer.score_pairs: the shared conversation encoded once gives score()'s rewards, on real HH pairs."""

import pytest

from almost.reward.evaluate import eval_data_path, pair_rewards
from almost.reward.formats import Pair, load_pairs
from almost.reward.model import RewardScorer, shared_length


@pytest.fixture(scope="module")
def hh_pairs():
    # Real multi-turn pairs of the shipped HH-RLHF split: long shared conversations, short endings.
    return load_pairs(eval_data_path("hh-harmless-test")).pairs[:12]


def test_shared_length_leaves_each_side_a_token_of_its_own():
    assert shared_length([1, 2, 3, 4], [1, 2, 5]) == 2
    assert shared_length([1, 2, 3], [1, 2, 3, 4]) == 2  # one text begins the other
    assert shared_length([1, 2], [1, 2]) == 1
    assert shared_length([7], [8, 9]) == 0
    assert shared_length([], [1]) == 0


@pytest.mark.parametrize("max_length", [1024, 96])
def test_pair_rewards_equal_scoring_every_text_whole(tiny_reward_model_path, hh_pairs, max_length):
    # 96 tokens: most of these pairs are longer and go through score(), which cuts their beginning.
    # fp32: the two paths add in different orders, which bf16 (auto on CPUs with native bf16) shows.
    scorer = RewardScorer(tiny_reward_model_path, batch_size=4, max_length=max_length, dtype="float32")
    pairs = [*hh_pairs, Pair(context=({"role": "user", "content": "Hi"},), chosen="Hello.", rejected="Hello. How can I help?")]
    chosen, rejected = pair_rewards(scorer, pairs, progress=False)
    whole = scorer.score([p.conversation(a) for p in pairs for a in (p.chosen, p.rejected)])
    assert chosen == pytest.approx(whole[0::2], abs=1e-4)
    assert rejected == pytest.approx(whole[1::2], abs=1e-4)
    lengths = [len(ids) for ids in scorer.tokenizer(scorer.texts([p.conversation(p.chosen) for p in pairs])).input_ids]
    assert (max_length == 1024) == all(n <= max_length for n in lengths)  # both paths were taken where intended


def test_score_pairs_refuses_unequal_sides(tiny_reward_model_path):
    scorer = RewardScorer(tiny_reward_model_path)
    with pytest.raises(ValueError, match="as many"):
        scorer.score_pairs([[{"role": "user", "content": "a"}]], [])
