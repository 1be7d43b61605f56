#!/usr/bin/env bash
# Installs, from Debian's packages, what building and testing Ferry needs and the machine lacks:
# a C compiler (ring, a TLS dependency), curl (health checks), openssl (the test broker's TLS
# certificates), a JDK 17+ and Maven (the Pulsar broker and its fetch). Rust itself comes from rustup (rust-toolchain.toml pins the release).
# Safe to run again: it installs only what is missing.
set -euo pipefail

missing=()
need() { # command package
  command -v "$1" >/dev/null 2>&1 || missing+=("$2")
}
need cc gcc
need curl curl
need openssl openssl
need mvn maven
java_ok=false
if command -v java >/dev/null 2>&1; then
  major=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n 1)
  [[ -n $major && $major -ge 17 ]] && java_ok=true
fi
for jdk in /usr/lib/jvm/java-17-openjdk-*/bin/java /usr/lib/jvm/java-21-openjdk-*/bin/java; do
  [[ -x $jdk ]] && java_ok=true
done
$java_ok || missing+=(openjdk-17-jre-headless)

if (( ${#missing[@]} == 0 )); then
  echo "install-deps: everything is already installed" >&2
  exit 0
fi
echo "install-deps: installing ${missing[*]}" >&2
sudo=
if (( $(id -u) != 0 )); then sudo=sudo; fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
command -v cargo >/dev/null 2>&1 || {
  echo "install-deps: cargo not found; install Rust with rustup (https://rustup.rs)" >&2
  exit 1
}
