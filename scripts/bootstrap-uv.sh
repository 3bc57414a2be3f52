#!/usr/bin/env bash
# Print the path of a usable `uv`, installing it from PyPI into ~/.local when missing.
set -euo pipefail
if command -v uv >/dev/null 2>&1; then command -v uv; exit 0; fi
for candidate in "$HOME/.local/bin/uv" "$(python3 -c 'import sysconfig;print(sysconfig.get_path("scripts"))' 2>/dev/null)/uv"; do
  if [ -x "$candidate" ]; then echo "$candidate"; exit 0; fi
done
python3 -m pip install --quiet --user uv >&2 2>/dev/null \
  || python3 -m pip install --quiet --user --break-system-packages uv >&2 \
  || python3 -m pip install --quiet uv >&2
for candidate in "$HOME/.local/bin/uv" "$(python3 -c 'import sysconfig;print(sysconfig.get_path("scripts"))')/uv"; do
  if [ -x "$candidate" ]; then echo "$candidate"; exit 0; fi
done
command -v uv
