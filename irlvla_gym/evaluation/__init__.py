"""Evaluation tools: ``irlvla score`` (score a plan file against a scene store, :mod:`.score_cli`) and
``irlvla check-scorer`` (human / constant velocity / PDM-Closed on the real samples, :mod:`.real_data`)."""
