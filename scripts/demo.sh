#!/bin/sh
# `make demo`: the replication of LoRA-Flow's main result on a synthetic
# compositional task, trained from scratch by loraflow on this machine
# (replication/README.md).  Generates the data, trains the base model, a
# language LoRA, a task LoRA and the gates, scores eight methods on 1,000
# held-out problems per seed (3 seeds), prints the table, writes
# build/demo/results.md, results.json and the fusion-weight heatmap
# build/demo/fusion.svg.  Everything is cached under build/demo/cache: a
# second run only prints the table again.  `make demo DEMO_ARGS=--small`
# runs the same pipeline at toy sizes in well under a minute.
set -e
BUILD=${1:-build}
[ $# -gt 0 ] && shift
echo "LoRA-Flow replication: base model (L1) + language LoRA (L2) + task LoRA (word problems in L1),"
echo "target: word problems posed and answered in L2.  Cached in $BUILD/demo/cache."
exec replication/run.sh "$BUILD" --out "$BUILD/demo" "$@"
