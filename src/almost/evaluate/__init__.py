"""Evaluation (step 7): static HHH A/B accuracy, TruthfulQA MC1, and pairwise model-vs-baseline judging."""
