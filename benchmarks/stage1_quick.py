"""Quick stage-1 check: train CSSS on 6 phantom slices, evaluate on 2 others (25% dose).

Run: python benchmarks/stage1_quick.py SIZE ITERS ["{stage-1 overrides as a dict}"]
Prints sinogram MSE (noisy vs denoised) and soft-window PSNR of FBP(y) and FBP(f(y)).
"""
import numpy as np, time, torch, sys
from turndiff.physics import *
from turndiff.dose import simulate_scan, mu_to_hu
from turndiff.phantoms import make_phantoms
from turndiff.stage1 import *
from turndiff.metrics import psnr
n=int(sys.argv[1]); iters=int(sys.argv[2]); kw=eval(sys.argv[3]) if len(sys.argv)>3 else {}
g=default_fan_geometry(n); A=CTProjector(g)
hu=make_phantoms(8,n,seed=0)
noisy,clean=simulate_scan(hu,g,photons=2.5e4,seed=0)
t=time.time()
m=train_projection_denoiser(noisy[:6], photons=2.5e4, config=Stage1Config.preset('fast', iters=iters, **kw), progress=False)
d=m.denoise(noisy[6:])
print(kw, 'time', round(time.time()-t), 'mse noisy', ((noisy[6:]-clean[6:])**2).mean(), 'mse den', ((d-clean[6:])**2).mean(), 
  'psnr fbp', psnr(mu_to_hu(A.fbp(noisy[6:])), hu[6:]).mean(), 'psnr den', psnr(mu_to_hu(A.fbp(d)), hu[6:]).mean(), flush=True)
