#!/bin/sh
# The built-in demonstration (`make demo`): needs no downloaded files.
# Writes a small random-weight Llama with two LoRA adapters and a LoRA-Flow
# gate (loraflow synth), then generates from one prompt in each fusion mode
# and draws the per-token, per-layer fusion weights as a heatmap.
set -e
BUILD=${1:-build}
LF="$BUILD/loraflow"
D="$BUILD/demo"
M="$D/model"
mkdir -p "$D"
if [ ! -f "$M/gate.safetensors" ]; then
    "$LF" synth -o "$M" --shape tiny --adapters 2 --rank 16 --seed 7
fi
P="LoRA-Flow mixes skills per token."
echo
echo "== base model"
"$LF" generate -m "$M" -p "$P" -n 24
echo "== one LoRA alone (lora_1, weight 1)"
"$LF" generate -m "$M" -l lora_1="$M/lora_1" -w 1 -p "$P" -n 24
echo "== static (average) fusion 0.5 / 0.5"
"$LF" generate -m "$M" -l lora_0="$M/lora_0" -l lora_1="$M/lora_1" -w 0.5,0.5 -p "$P" -n 24
echo "== LoRA-Flow: weights from the gate, per token and per layer"
"$LF" generate -m "$M" -l lora_0="$M/lora_0" -l lora_1="$M/lora_1" -g "$M/gate.safetensors" -p "$P" -n 24 \
    --trace "$D/trace.csv" --trace-svg "$D/fusion.svg"
echo
echo "The weights are random, so the text is noise; what the demo shows is the machinery:"
echo "the fusion weights of every token at every layer are in $D/trace.csv and drawn in"
echo "$D/fusion.svg (open it in a browser).  First rows of the trace:"
head -n 9 "$D/trace.csv"
