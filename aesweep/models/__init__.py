"""The model layer: the networks a trial trains and what they cost.

Owns the backbones (``nets``), the autoencoder with its bottleneck and heads (``model``), the loss terms that a
variant composes (``losses``) and the memory estimate that ``validate`` makes before anything runs
(``capacity``).

May import: ``spec``, ``registry``. Not ``data`` (a sibling layer), nor anything above.
"""
