#!/usr/bin/env bash
# Runs the protoc binary shipped inside the `protoc-bin-vendored-*` crate that cargo has
# already downloaded for ferry-proto's build, so no build script needs a system protoc.
# Used through `[env] PROTOC` in .cargo/config.toml.
set -euo pipefail
cargo_home=${CARGO_HOME:-$HOME/.cargo}
case "$(uname -m)" in
  x86_64) platform=linux-x86_64 ;;
  aarch64) platform=linux-aarch_64 ;;
  *) echo "protoc.sh: no vendored protoc for $(uname -m); set PROTOC to a protoc binary" >&2; exit 1 ;;
esac
candidates=()
for dir in "$cargo_home"/registry/src/*/protoc-bin-vendored-"$platform"-*/bin; do
  [[ -f $dir/protoc ]] && candidates+=("$dir/protoc")
done
if (( ${#candidates[@]} == 0 )); then
  echo "protoc.sh: no protoc-bin-vendored-$platform crate under $cargo_home/registry/src; run 'cargo fetch' first or set PROTOC" >&2
  exit 1
fi
# Newest version last in version order.
protoc=$(printf '%s\n' "${candidates[@]}" | sort -V | tail -n 1)
if [[ ! -x $protoc ]]; then
  chmod +x "$protoc" 2>/dev/null || {
    copy=${TMPDIR:-/tmp}/ferry-protoc-$(id -u)
    cp "$protoc" "$copy" && chmod +x "$copy" && protoc=$copy
  }
fi
include=$(dirname "$(dirname "$protoc")")/include
if [[ -d $include ]]; then
  exec "$protoc" -I "$include" "$@"
fi
exec "$protoc" "$@"
