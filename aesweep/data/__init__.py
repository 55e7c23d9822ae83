"""The data layer: datasets as whole uint8 tensors on the trial's device.

Owns the registered datasets and ``load_dataset`` (``datasets``), their files on disk (``files``: the data root,
the per-dataset lock, checksums, downloads) and batching with device-side transforms (``batches``).

May import: ``spec``, ``registry``. Not ``models`` (a sibling layer), nor anything above.
"""
