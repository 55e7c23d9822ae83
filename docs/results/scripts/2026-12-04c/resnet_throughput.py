# Issue 14, 2026-12-04 evening: training throughput of the resnet backbone's encoder on one core (forward + backward +
# SGD step, 28x28 grey), to size study 004's SupCon run. Seen, with the machine's other core busy: width 1.0 at batch
# 64: 23-30 images/s; width 0.25 at batch 256: 164-255 images/s. As saved it measures width 0.25 at batch 256 (width=1.0 and 64 for the other figure).
# Usage: PYTHONPATH=<checkout> python resnet_throughput.py
import time, torch
from aesweep.models.nets import resnet
torch.set_num_threads(1)
b = resnet((1,28,28), 128, width=0.25)
enc = b.encoder
x = torch.rand(256,1,28,28)
opt = torch.optim.SGD(enc.parameters(), lr=0.01)
for i in range(3):
    t=time.time(); y=enc(x); y.sum().backward(); opt.step(); opt.zero_grad(); print(f"{256/(time.time()-t):.1f} img/s")
