"""The evaluation layer: what is measured on a trained model, on the trial's device.

Owns the reconstruction metrics (``metrics``), the latent probes (``probes``, with the torch ``solvers`` and the
torch ``mlp_probe``), clustering (``clustering``), the generative measures (``generative``), the figures
(``figures``), the sanity baselines PCA and raw pixels (``baselines``) and the evaluation of one trial
(``evaluate``).

May import: ``models``, ``data``, ``spec``, ``registry``.
"""
