"""The report layer: a finished sweep as a study's tables and plots.

Owns reading a sweep's record from MLflow and finding a sweep (``record``), the study tables (``tables``), the
plots (``plots``, ``curves``: loss curves from the metric histories), the study's claims evaluated on the trials
(``findings``: computed verdicts) and the assembled report (``assemble``).

May import: ``service`` (tracking, sweep state, Pareto ranking) and everything below it.
"""
