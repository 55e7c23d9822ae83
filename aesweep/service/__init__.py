"""The service layer: sweeps on Ray Tune, recorded in MLflow.

Owns the search space of each algorithm (``search_space``), the worker-side trainable (``trainable``), the sweep's
own state on storage (``sweep_state``), the driver that runs and resumes (``driver``), trial tables
(``trials``), eval-only sweeps (``reevaluate``), MO-ASHA (``moasha``) on the shared Pareto ranking (``pareto``),
the live view (``liveview``), the NSGA-II sampler that survives Tune's checkpoints (``samplers``), MLflow
(``tracking``: the only module that talks to it), a sweep as a Ray Job (``jobs``), loopback-only local Ray (``loopback``), Tune's state committed
whole (``tune_state``) and the patches to Ray 2.60's internals (``ray_patches``).

May import: ``training`` and everything below it.
"""
