"""Evaluation tools: ``irlvla score`` (score a plan file against a scene store, :mod:`.score_cli`),
``irlvla check-scorer`` (human / constant velocity / PDM-Closed on the real samples, :mod:`.real_data`) and paired
comparisons of agents against a baseline with hierarchical bootstrap CIs (:mod:`.paired`, the statistics of
``irlvla baselines compare``)."""
