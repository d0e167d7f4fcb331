#!/usr/bin/env bash
# Exact recipe of the bundled prior diffrecon/priors/weights/head-64.{safetensors,json}.
# Needs: .venv with the package and its "data" extra (nilearn). Phases A-C ran on one CPU thread, phase D
# on one CUDA GPU (an H100; on a CPU it is the same computation, only far slower). Resumable:
# re-running this script continues the run in runs/head64 from its last checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
RUN=runs/head64
BANK=runs/bank-head64
DEVICE=${DEVICE:-$($PY -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")}

# 1. training slices: 260 synthetic heads (13 shards x 20, seed 0) + the two real MNI152 T1 templates,
#    framed like the sample volume, slices along all three axes (37,981 slices). Resumes if interrupted.
$PY -m diffrecon.datasets.bank --out "$BANK" --volumes 260 --seed 0 --threads 1

# 2. training (v-prediction, linear beta 1e-4..0.02, T=1000, MONAI DiffusionModelUNet (16,32,64,128)).
#    Phase A: steps 0..1677 with half of each batch at t < 250; phase B: a quarter there; phase C: lr 3e-4.
STEP=$($PY -c "import json; print(json.load(open('$RUN/state.json'))['step'])" 2>/dev/null || echo none)
if [ "$STEP" = none ]; then
  $PY -m diffrecon.cli train-prior --bank "$BANK" --out "$RUN" \
    --channels 16 32 64 128 --attention 0 0 0 1 --res-blocks 1 --head-channels 32 --norm-groups 8 \
    --schedule linear --timesteps 1000 --beta-start 1e-4 --beta-end 0.02 --parameterisation v \
    --batch-size 16 --lr 8e-4 --warmup 100 --ema-decay 0.995 --low-t-frac 0.5 --low-t-max 250 \
    --val-slices 48 --val-every 100 --log-every 10 --ckpt-minutes 5 --threads 1 --steps 1677 \
    --description "nilearn MNI152 2009a T1 (1 mm, 2 mm; skull-stripped) + SynthSeg-style synthetic T1 heads from MNI152 GM/WM/brain-mask maps (diffrecon.datasets.synth, seed 0); 64x64 slices along all three axes of 64^3 head-framed volumes; never Colin27"
elif [ "$STEP" -lt 1677 ]; then
  $PY -m diffrecon.cli train-prior --out "$RUN" --resume --steps 1677 --threads 1
fi
# phase B: steps 1677..2974 with a quarter of each batch at t < 250 (a resumed run keeps its stored
# config; the overrides below are idempotent)
STEP=$($PY -c "import json; print(json.load(open('$RUN/state.json'))['step'])")
if [ "$STEP" -lt 2974 ]; then
  $PY -m diffrecon.cli train-prior --out "$RUN" --resume --low-t-frac 0.25 --steps 2974 --threads 1
fi
# phase C: steps 2974..4939 with the learning rate lowered from 8e-4 to 3e-4
STEP=$($PY -c "import json; print(json.load(open('$RUN/state.json'))['step'])")
if [ "$STEP" -lt 4939 ]; then
  $PY -m diffrecon.cli train-prior --out "$RUN" --resume --low-t-frac 0.25 --lr 3e-4 --steps 4939 --threads 1
fi
# phase D: steps 4939..9114 on a GPU: the bank grows to 600 synthetic heads (shards 0-12 are unchanged,
# so the first 260 heads are the same), batch 256, lr 5e-4, EMA 0.999 (4 minutes on one H100)
$PY -m diffrecon.datasets.bank --out "$BANK" --volumes 600 --seed 0 --workers "$(nproc)"
$PY -m diffrecon.cli train-prior --out "$RUN" --resume --batch-size 256 --lr 5e-4 --ema-decay 0.999 \
  --val-every 500 --log-every 50 --ckpt-minutes 2 --steps 9114 --device "$DEVICE" --threads 8

# 3. export the EMA weights (float16) with the held-out denoising curve, and the sample grid for the docs.
$PY -m diffrecon.priors.export "$RUN/ema_prior" diffrecon/priors/weights/head-64 --name head-64 --half \
  --benchmark --samples docs/img/prior_samples.png --sample-steps 200 --sample-eta 1
$PY benchmarks/prior_denoising.py --prior head-64
