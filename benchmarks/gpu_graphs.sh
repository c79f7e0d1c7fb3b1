#!/usr/bin/env bash
# The prepared GPU check of issue 12's launch-overhead work, in one call of about 5 minutes on
# one GPU (python3 with torch, pytest; no Textual needed, no downloads, synthetic data only):
#   1. training img/s, eager against the CUDA-graph step (benchmarks/bench_graph_step.py),
#      the VQ-VAE beside its same-size reference, then every presets/paper/ preset;
#   2. the CUDA tests of the graphed training step and of the samplers' graphs;
#   3. sampling 64 images with and without graphs (benchmarks/bench_sample_graphs.py);
#   4. `genwb run` end to end on CUDA: a graphed Row LSTM with validation, samples and a resume,
#      and DDP over NCCL with one rank (launched by --nproc 1), resumed;
#   5. torch.compile(mode="reduce-overhead") of the Row LSTM's step against eager, if time is left.
# Results land in $OUT (default /tmp/genwb-gpu) as JSON beside the printed tables.
#
#     bash benchmarks/gpu_graphs.sh
set -u
OUT=${OUT:-/tmp/genwb-gpu}
mkdir -p "$OUT"
export OUT PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
PY=${PYTHON:-python3}
start=$SECONDS
step() { echo; echo "=== $1 ($((SECONDS - start)) s)"; }

if ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "error: no CUDA device visible to $PY (torch.cuda.is_available() is False); this check needs one GPU" >&2
    exit 1
fi

step "GPU"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
$PY -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"

step "training: eager against the CUDA-graph step"
timeout 180 $PY benchmarks/bench_graph_step.py --steps 60 --repeats 2 --max-time 1.5

step "the presets/paper/ presets: eager against the CUDA-graph step"
timeout 240 $PY benchmarks/bench_graph_step.py --paper --steps 40 --repeats 2 --max-time 1.5

step "tests"
timeout 150 $PY -m pytest -q -p no:cacheprovider tests/test_graph_step.py tests/test_cudagraph.py 2>&1 | tail -25

step "sampling 64 images"
timeout 90 $PY benchmarks/bench_sample_graphs.py

step "genwb run on CUDA"
work=/tmp/genwb-work
rm -rf "$work" && mkdir -p "$work"
export GENWB_DATA=$work/data GENWB_CACHE=$work/cache GENWB_OFFLINE=1
$PY - "$work" <<'EOF'
import sys
from pathlib import Path
from tests.conftest import make_idx_dataset, preset_text
work = Path(sys.argv[1])
make_idx_dataset(work / "data" / "fashion-mnist", n_train=640, n_test=100)
rnn = 'name = "row_lstm"\nhidden = 16\nlayers = 2\nhead_channels = 16'
(work / "rnn.toml").write_text(preset_text(rnn, "rnn").replace('device = "cpu"', 'device = "cuda"'))
(work / "ddp.toml").write_text(preset_text('name = "made"\nhidden = [64]\nnum_masks = 1', "ddp").replace('device = "cpu"', 'device = "cuda"'))
EOF
run() { echo "\$ genwb $*"; timeout 100 $PY -m workbench.cli "$@" 2>&1 | tail -6; echo "rc ${PIPESTATUS[0]}"; }
steps() { $PY -c "import json,sys; r=[json.loads(l) for l in open(sys.argv[1])]; s=[x['step'] for x in r if x.get('split')=='train']; print('train rows', len(s), 'unique', len(set(s)), 'last', s[-1] if s else None)" "$1"; }
run run "$work/rnn.toml" --out "$work/runs" --set train.max_steps=30
rnn=$(ls -d "$work"/runs/rnn-* | head -1)
run run --resume "$rnn" --set train.max_steps=48
steps "$rnn/metrics.jsonl"
head -c 300 "$rnn/eval.json" 2>/dev/null; echo
run run "$work/ddp.toml" --out "$work/runs" --nproc 1 --set train.max_steps=30
ddp=$(ls -d "$work"/runs/ddp-* | head -1)
run run --resume "$ddp" --nproc 1 --set train.max_steps=48
steps "$ddp/metrics.jsonl"

step "torch.compile reduce-overhead (Row LSTM, batch 32)"
left=$((560 - (SECONDS - start)))
if [ "$left" -gt 60 ]; then
  timeout "$left" $PY benchmarks/bench_graph_step.py --only row_lstm --compile row_lstm --steps 40 --repeats 1 --max-time 1.5 2>&1 | grep -v "^W1\|^  warnings" | tail -6
else
  echo "skipped: $left s left"
fi
step "done"
