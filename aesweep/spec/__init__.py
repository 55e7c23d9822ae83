"""The spec layer: what a sweep file says, checked without PyTorch, Ray or MLflow.

Owns the sweep file's models (``trial``: one concrete trial; ``searchable`` and ``sweep_spec``: the file, every
field a value or a distribution), the ``distributions``, reading the file (``load``: YAML through ``yamlsafe``,
``--set`` overrides, stages), its errors (``problems``: FILE:LINE: field: message), the checks across fields
(``checks``), and the vocabulary those checks need: the variants and the knobs they own (``variants``), the
backbones' size rules (``backbones``), the learning-rate schedules (``schedules``) and the
names the schema fixes (``trial.INIT_SCHEMES``, ``trial.OUTPUT_ACTIVATIONS``). The built-in names of every other
registry are the registries' declarations, read without importing them (``aesweep.registry.declared``). A study's
claims, the findings file beside its sweep file, are read here too (``findings``).

May import: ``aesweep.registry`` only. Everything above imports it.
"""
