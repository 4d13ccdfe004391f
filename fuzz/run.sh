#!/usr/bin/env bash
# Coverage-guided fuzzing of the protocol parsers, bounded in time.
#   pip install atheris && fuzz/run.sh [SECONDS_PER_TARGET]
# A crash leaves crash-* files (the input) in fuzz/findings/ and exits non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
mkdir -p fuzz/findings
python fuzz/seeds.py fuzz/corpus
status=0
for target in server_machine raw_machine legacy_parser; do
    corpus="fuzz/corpus/$target"
    mkdir -p "$corpus"
    echo "== $target for ${seconds}s"
    python -c "import atheris" 2>/dev/null || { echo "atheris is not installed: pip install atheris"; exit 2; }
    ( cd fuzz/findings && python ../fuzz.py "$target" -max_total_time="$seconds" -print_final_stats=1 \
        "../../$corpus" ) || status=$?
done
exit $status
