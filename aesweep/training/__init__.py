"""The training layer: one trial from its TrialConfig to its metrics, checkpoints and files (``train``).

Knows neither Ray nor MLflow: it reports through the callback it is given, so the service layer runs it in a Ray
worker and ``aesweep train-one`` runs it in a plain process.

May import: ``evaluation``, ``models``, ``data``, ``spec``, ``registry``.
"""
