# Sourced by scripts/test and scripts/demo: make sure a virtual environment with gpudiff (editable)
# and the wanted extras exists, then activate it. Reinstalls when pyproject.toml changes.
# GPUDIFF_VENV chooses the folder (default .venv); PYTHON the interpreter that creates it.
_gd_extras="${GPUDIFF_EXTRAS:-}"   # set by the caller (test: "test"; demo: none)
_gd_venv="${GPUDIFF_VENV:-.venv}"
_gd_hash="$(sha256sum pyproject.toml | cut -c1-16)"
_gd_stamp="$_gd_venv/.gpudiff-installed"
if [ ! -x "$_gd_venv/bin/python" ]; then
  echo "setting up $_gd_venv (first run on this machine)..." >&2
  "${PYTHON:-python3}" -m venv "$_gd_venv"
fi
# A stamp line is "<pyproject hash> <extras>"; any install of the same pyproject with these extras will do.
if ! grep -qx "$_gd_hash ${_gd_extras:-base}" "$_gd_stamp" 2>/dev/null \
   && ! { [ -z "$_gd_extras" ] && grep -q "^$_gd_hash " "$_gd_stamp" 2>/dev/null; }; then
  "$_gd_venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >&2
  if [ -n "$_gd_extras" ]; then _gd_target=".[${_gd_extras}]"; else _gd_target="."; fi
  "$_gd_venv/bin/python" -m pip install -q --disable-pip-version-check -e "$_gd_target" >&2
  # compile the CPU kernels now (once, ~1 min) rather than inside the first run (gpudiff warmup)
  "$_gd_venv/bin/python" -m gpudiff warmup --quiet >&2 || echo "warning: gpudiff warmup failed" >&2
  echo "$_gd_hash ${_gd_extras:-base}" >> "$_gd_stamp"
fi
# shellcheck disable=SC1091
. "$_gd_venv/bin/activate"
