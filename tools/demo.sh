#!/usr/bin/env bash
# The README's demo: set up .venv, then segment the bundled sample images.
# No trained weights can be bundled, so it runs with stand-in random weights (it says
# so loudly) unless OVSEG_CHECKPOINT points at an EOV-Seg checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup_env.sh
OUT=${OUT:-demo_out}
if [ -n "${OVSEG_CHECKPOINT:-}" ]; then
  weights=(--checkpoint "$OVSEG_CHECKPOINT")
else
  weights=(--weights random)
fi
.venv/bin/ovseg segment src/ovseg_ros/assets/warehouse.jpg src/ovseg_ros/assets/street.jpg \
  "${weights[@]}" \
  --classes "person; forklift; pallet; box, cardboard box; shelf, rack; car, automobile; tree; building; road; sky; floor; wall" \
  --things "person; forklift; pallet; box; car" \
  --out "$OUT" "$@"
ls -1 "$OUT"
