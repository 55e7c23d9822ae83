"""Diagnostic: the conv AE of study 000 (Fashion-MNIST, 7,200 training / 800 validation images), trained with MSE,
Adam 1e-3, batch 128, one thread. Usage: tail.py shipped|plain LATENT EPOCHS [WIDTH, default 0.25].

shipped: the decoder of the code on PYTHONPATH as it is; plain: the last transposed conv's BN + ReLU replaced by
Identity (and a bias added), meaningful only on code whose last stage has them. Run on 4f2fba1, whose last stage had BN + ReLU, for tail-64.log (shipped vs plain,
latent 64, 12 epochs); on 3116490, whose last stage is bare, for width-0.5-256.log (shipped, latent 256, 30
epochs, width 0.5)."""
import sys, time, numpy as np, torch
from torch import nn
from aesweep.models.model import AutoEncoder
torch.set_num_threads(1); torch.manual_seed(0)
tail, latent, epochs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]); width = float(sys.argv[4]) if len(sys.argv) > 4 else 0.25
def idx(p):
    import gzip
    b = gzip.open(p).read() if p.endswith('gz') else open(p,'rb').read()
    return np.frombuffer(b, np.uint8, offset=16).reshape(-1,1,28,28)
import glob
root='/usr/share/datasets/fashion-mnist/'
tr=torch.tensor(idx(glob.glob(root+'train-images*')[0])[:8000]).float()/255
te=torch.tensor(idx(glob.glob(root+'t10k-images*')[0])[:2000]).float()/255
xtr, xva = tr[:7200], tr[7200:]
m = AutoEncoder("conv", (1,28,28), latent, width=width)
dec = m.backbone.decoder
mods = list(dec)
last_t = max(i for i,x in enumerate(mods) if isinstance(x, nn.ConvTranspose2d))
if tail == "plain":
    dec[last_t+1] = nn.Identity(); dec[last_t+2] = nn.Identity()
    dec[last_t].bias = nn.Parameter(torch.zeros(mods[last_t].out_channels))
print(tail, [type(x).__name__ for x in list(m.backbone.decoder)[last_t:]])
opt = torch.optim.Adam(m.parameters(), 1e-3)
g = torch.Generator().manual_seed(0)
for ep in range(epochs):
    m.train(); perm = torch.randperm(len(xtr), generator=g); t0=time.time(); tot=0
    for i in range(0, len(xtr), 128):
        x = xtr[perm[i:i+128]]
        loss = ((m.decode(m.encode(x).z) - x)**2).mean()
        opt.zero_grad(); loss.backward(); opt.step(); tot += loss.item()*len(x)
    m.eval()
    with torch.no_grad(): v = ((m.decode(m.encode(xva).z) - xva)**2).mean().item()
    print(f"{tail} z{latent} ep{ep+1} train {tot/len(xtr):.4f} val {v:.4f} {time.time()-t0:.1f}s", flush=True)
