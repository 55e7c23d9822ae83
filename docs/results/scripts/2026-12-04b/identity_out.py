"""Diagnostic (issue 14, 2026-12-04): aesweep's CLI with the mlp decoder's sigmoid output replaced by the identity,
i.e. a linear output under the MSE loss. Usage: python identity_out.py train-one SPEC --set ..."""
from torch import nn

from aesweep.models import nets

nets.OUTPUT_ACTIVATIONS["sigmoid"] = nn.Identity
from aesweep.cli import app  # noqa: E402

app()
