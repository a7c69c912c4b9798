#!/bin/sh
# The replication pipeline (replication/README.md): generate the data, train
# the base model, the two LoRAs and the gates with loraflow, search the
# task-level weights, score every method on the held-out test, and write the
# table.  Everything it writes is under OUT (default build/demo); trained
# pieces are cached there under a key of (generator version, recipe version,
# sizes, seed), so a second run only re-prints the table.
#
#   replication/run.sh [BUILD] [--small] [--seeds "1 2 3"] [--out DIR] [--jobs N] [--no-tie-embeddings]
#
# The base model starts with each L2 word's input embedding a copy of its
# L1 translation's (train-base --tie-embeddings with the generator's
# ties.tsv); --no-tie-embeddings starts it from random embeddings only (the
# design before session 4), cached under its own key.
set -e
BUILD=build
SMALL=""
SEEDS="1 2 3"
OUT=""
JOBS=2
TIE=1
case "$1" in -*|"") ;; *) BUILD=$1; shift ;; esac
while [ $# -gt 0 ]; do
    case "$1" in
    --small) SMALL=--small ;;
    --seeds) SEEDS=$2; shift ;;
    --out) OUT=$2; shift ;;
    --jobs) JOBS=$2; shift ;;
    --no-tie-embeddings) TIE="" ;;
    *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
[ -n "$OUT" ] || OUT=$BUILD/demo
LF=$BUILD/loraflow
GEN=$BUILD/replication/gen
BENCH=$BUILD/replication/bench
for b in "$LF" "$GEN" "$BENCH"; do
    [ -x "$b" ] || { echo "run.sh: $b is missing (run make demo)" >&2; exit 1; }
done

# Recipe: bump RECIPE when any training setting below changes (it is part of the cache key).
RECIPE=4
if [ -n "$SMALL" ]; then
    MODE=small
    BASE_EPOCHS=1; LORA_EPOCHS=1; GATE_EPOCHS=2; GATE_LR=2e-2; NEW=40
else
    MODE=full
    BASE_EPOCHS=3; LORA_EPOCHS=3; GATE_EPOCHS=40; GATE_LR=2e-2; NEW=40
fi
GV=$("$GEN" --version)
KEY="g$GV-r$RECIPE-$MODE${TIE:+-tie}"
CACHE=$OUT/cache
mkdir -p "$CACHE"
T0=$(date +%s)
log() { echo "[$(( $(date +%s) - T0 ))s] $*"; }

# run CMD... quietly into a log file; on failure show the log's end
runlog() {
    _log=$1; shift
    if ! "$@" >"$_log" 2>&1; then
        echo "run.sh: failed: $*" >&2
        tail -n 20 "$_log" >&2
        return 1
    fi
}

# ---------- data of every seed ----------
for s in $SEEDS; do
    D=$CACHE/$KEY-seed$s
    if [ ! -f "$D/data/.done" ]; then
        mkdir -p "$D"
        "$GEN" "$D/data" --seed "$s" $SMALL
        "$BENCH" check -m "$D/data" --data "$D/data/test.jsonl" >/dev/null
        touch "$D/data/.done"
    fi
    if [ ! -f "$D/data/l1_test.jsonl" ] || [ ! -f "$D/data/ties.tsv" ]; then
        # a cache from before l1_test.jsonl or ties.tsv (same generator otherwise)
        "$GEN" "$D/l1tmp" --seed "$s" $SMALL
        for f in l1_test.jsonl ties.tsv; do [ -f "$D/data/$f" ] || mv "$D/l1tmp/$f" "$D/data/$f"; done
        rm -rf "$D/l1tmp"
    fi
done

# ---------- the base model: one, as the paper has one Llama-2 (pre-training data of seed 1) ----------
B=$CACHE/$KEY-base
if [ ! -f "$B/.done" ]; then
    FIRST=$(echo $SEEDS | cut -d' ' -f1)
    BD=$CACHE/$KEY-seed$FIRST/data
    log "training the base model ($(wc -l <"$BD/base.jsonl") documents of L1, L2, parallel text and sums)"
    rm -rf "$B" "$B.init"
    runlog "$CACHE/$KEY-base.log" "$LF" train-base --config "$BD/config.json" --tokenizer "$BD" \
        --data "$BD/base.jsonl" --dev "$BD/base_dev.jsonl" -o "$B" --batch 16 --epochs $BASE_EPOCHS --lr 3e-3 \
        --warmup 0.05 --seed 1 -t 1 ${TIE:+--tie-embeddings "$BD/ties.tsv"}
    rm -rf "$B.init"
    touch "$B/.done"
    log "base model: $(tail -n 1 "$CACHE/$KEY-base.log")"
fi

# ---------- per seed: LoRAs, gates, task-level weights ----------
train_seed() {
    s=$1; t=$2
    D=$CACHE/$KEY-seed$s
    mkdir -p "$D/logs"
    if [ ! -f "$D/lora_lang/.done" ]; then
        runlog "$D/logs/lora_lang.log" "$LF" train-lora -m "$B" --data "$D/data/lang.jsonl" --dev "$D/data/lang_dev.jsonl" \
            -o "$D/lora_lang" --rank 8 --alpha 16 --lr 2e-3 --batch 16 --epochs $LORA_EPOCHS --dropout 0.05 \
            --seed "$s" -t "$t"
        touch "$D/lora_lang/.done"
        log "seed $s: language LoRA: $(tail -n 1 "$D/logs/lora_lang.log")"
    fi
    if [ ! -f "$D/lora_task/.done" ]; then
        runlog "$D/logs/lora_task.log" "$LF" train-lora -m "$B" --data "$D/data/task.jsonl" --dev "$D/data/task_dev.jsonl" \
            -o "$D/lora_task" --rank 8 --alpha 16 --lr 2e-3 --batch 16 --epochs $LORA_EPOCHS --dropout 0.05 \
            --seed "$s" -t "$t"
        touch "$D/lora_task/.done"
        log "seed $s: task LoRA: $(tail -n 1 "$D/logs/lora_task.log")"
    fi
    L="-l lang=$D/lora_lang -l task=$D/lora_task"
    G="--data $D/data/target_train.jsonl --dev $D/data/target_dev.jsonl --epochs $GATE_EPOCHS --batch 8 --lr $GATE_LR --seed $s -t $t"
    if [ ! -f "$D/gate_flow.safetensors" ]; then
        runlog "$D/logs/gate_flow.log" "$LF" train-gate -m "$B" $L $G -o "$D/gate_flow.safetensors"
        log "seed $s: LoRA-Flow gate: $(tail -n 1 "$D/logs/gate_flow.log")"
    fi
    # per-layer static weights: the same gate with T = 1e6, so that softmax(W x / T) = 1/k for every
    # token and the fusion weights are 1/k + b (one learned number per LoRA per layer)
    if [ ! -f "$D/gate_layer.safetensors" ]; then
        runlog "$D/logs/gate_layer.log" "$LF" train-gate -m "$B" $L $G -T 1000000 -o "$D/gate_layer.safetensors"
        log "seed $s: per-layer static weights: $(tail -n 1 "$D/logs/gate_layer.log")"
    fi
    if [ ! -f "$D/gate_task.safetensors" ]; then
        runlog "$D/logs/gate_task.log" "$LF" train-gate -m "$B" -l "task=$D/lora_task" $G -o "$D/gate_task.safetensors"
        log "seed $s: gate over the task LoRA alone: $(tail -n 1 "$D/logs/gate_task.log")"
    fi
    if [ ! -f "$D/hub_w.txt" ]; then
        runlog "$D/logs/hub.log" "$BENCH" hub -m "$B" $L --data "$D/data/target_train.jsonl" -o "$D/hub_w.tmp" -t "$t"
        mv "$D/hub_w.tmp" "$D/hub_w.txt"
        log "seed $s: task-level weights $(cat "$D/hub_w.txt") ($(tail -n 1 "$D/logs/hub.log"))"
    fi
}

# score one method of one seed (args: seed method)
score() {
    s=$1; m=$2
    D=$CACHE/$KEY-seed$s
    [ -f "$D/scores/$m.json" ] && return 0
    mkdir -p "$D/scores"
    TEST=$D/data/test.jsonl
    case $m in
    base) A="" ;;
    lang) A="-l lang=$D/lora_lang -w 1" ;;
    task) A="-l task=$D/lora_task -w 1" ;;
    avg) A="-l lang=$D/lora_lang -l task=$D/lora_task -w 0.5,0.5" ;;
    hub) A="-l lang=$D/lora_lang -l task=$D/lora_task -w $(cat "$D/hub_w.txt")" ;;
    layer) A="-l lang=$D/lora_lang -l task=$D/lora_task -g $D/gate_layer.safetensors" ;;
    gate1) A="-l task=$D/lora_task -g $D/gate_task.safetensors" ;;
    flow) A="-l lang=$D/lora_lang -l task=$D/lora_task -g $D/gate_flow.safetensors" ;;
    task_l1) A="-l task=$D/lora_task -w 1"; TEST=$D/data/l1_test.jsonl ;;
    esac
    runlog "$D/logs/score_$m.log" "$BENCH" score -m "$B" $A --data "$TEST" -n $NEW -t 1 \
        --lang-words "$D/data/lang_words.txt" --other-words "$D/data/l1_words.txt" \
        -o "$D/scores/$m.jsonl" --summary "$D/scores/$m.tmp"
    mv "$D/scores/$m.tmp" "$D/scores/$m.json"
}
METHODS="base lang task avg hub layer gate1 flow task_l1"

# A pool of JOBS worker processes, one thread each (tiny models: threads cost
# more than they give).  Units of work: the training of each seed, then the
# scoring of each (seed, method); a worker claims a unit with an atomic mkdir,
# and a scoring unit waits for its seed's training.
LOCKS=$OUT/.locks.$$
rm -rf "$LOCKS"; mkdir -p "$LOCKS"
trap 'rm -rf "$LOCKS"' EXIT
worker() {
    for s in $SEEDS; do
        if mkdir "$LOCKS/train$s" 2>/dev/null; then
            if train_seed "$s" 1; then touch "$LOCKS/train$s/ok"; else touch "$LOCKS/train$s/failed"; return 1; fi
        fi
    done
    for s in $SEEDS; do
        for m in $METHODS; do
            mkdir "$LOCKS/score$s-$m" 2>/dev/null || continue
            while [ ! -f "$LOCKS/train$s/ok" ]; do
                [ -f "$LOCKS/train$s/failed" ] && return 1
                sleep 2
            done
            score "$s" "$m" || return 1
        done
    done
}
i=0; pids=""
while [ $i -lt "$JOBS" ]; do
    worker & pids="$pids $!"
    i=$((i + 1))
done
for p in $pids; do wait "$p" || { echo "run.sh: a worker failed (logs in $CACHE/*/logs)" >&2; exit 1; }; done
log "trained and scored $(echo $METHODS | wc -w) methods x $(echo $SEEDS | wc -w) seeds"

DIRS=""
for s in $SEEDS; do DIRS="$DIRS $CACHE/$KEY-seed$s"; done
echo
"$BENCH" table --out "$OUT" $DIRS

# the fusion weights of LoRA-Flow on the first test problem of the first seed
set -- $SEEDS
D=$CACHE/$KEY-seed$1
Q=$(sed -n '1s/^{"question":"\([^"]*\)".*/\1/p' "$D/data/test.jsonl")
"$LF" generate -m "$B" -l lang="$D/lora_lang" -l task="$D/lora_task" -g "$D/gate_flow.safetensors" \
    -p "[INST] $Q [/INST]" -n $NEW --greedy -t 1 --trace "$OUT/trace.csv" --trace-svg "$OUT/fusion.svg" \
    >"$OUT/fusion_output.txt" 2>/dev/null
SENT=$("$BENCH" trace "$OUT/trace.csv" "$D/data/lang_words.txt")
{
    echo
    echo "Fusion weights of LoRA-Flow (seed $1) on the test problem \"$Q\","
    echo "answered \"$(cat "$OUT/fusion_output.txt")\": fusion.svg (rows: layers; columns: tokens)."
    echo "$SENT"
} | tee -a "$OUT/results.md"
echo
echo "Wrote $OUT/results.md, $OUT/results.json and $OUT/fusion.svg ($(( $(date +%s) - T0 ))s)."
