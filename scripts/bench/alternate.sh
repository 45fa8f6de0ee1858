# Sourced by scripts/bench/{imagination,training}.sh: the alternating rounds both benchmarks run.
# The caller defines run_pytorch PRESET and run_world4rl PRESET (each appends its side's JSON line to
# $TMP/PRESET.pytorch or $TMP/PRESET.world4rl) and sets PY, TMP and ROUNDS.

# The last JSON line of FILE's KEY, rounded to 0.1.
last_ms() {
  tail -n 1 "$1" | "$PY" -c \
    'import json, sys; print(round(json.load(sys.stdin)[sys.argv[1]], 1))' "$2"
}

# ROUNDS rounds of PRESET, the sides swapping which goes first every round (so a drift hits both
# alike); each round's KEY printed on stderr.
alternate_rounds() {
  local preset="$1" key="$2" r
  for r in $(seq "$ROUNDS"); do
    if (( r % 2 )); then
      run_pytorch "$preset"; run_world4rl "$preset"
    else
      run_world4rl "$preset"; run_pytorch "$preset"
    fi
    echo "$preset round $r: pytorch $(last_ms "$TMP/$preset.pytorch" "$key") ms," \
      "world4rl $(last_ms "$TMP/$preset.world4rl" "$key") ms" >&2
  done
}
