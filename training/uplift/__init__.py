"""Uplift: the incremental effect of offers learned from exposure logs (model, learners, evaluation, guard,
training, campaign scoring and the commands)."""
