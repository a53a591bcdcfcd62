"""The serving wing: the request contract built from the stored model, the scorer, runtime tuning.

Nothing here imports from `credit_pd.training`: the bento ships without the training wing.
"""
