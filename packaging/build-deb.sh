#!/usr/bin/env bash
# Builds the Debian package of Shadowcopy: target/debian/shadowcopy_<version>-1_<arch>.deb.
#
# 1. builds the release binary;
# 2. generates, with that binary, the man pages and the shell completions into
#    target/packaging/ (the package's assets name them there; see
#    [package.metadata.deb] in crates/cli/Cargo.toml);
# 3. runs `cargo deb -p cli --no-build`, which packs the binary, the unit, the sample
#    configuration, the man pages and the completions.
#
# Needs cargo-deb (`cargo install cargo-deb`). Run from anywhere in the repository.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

if ! cargo deb --version >/dev/null 2>&1; then
    echo "build-deb.sh: cargo-deb is missing; install it with: cargo install cargo-deb" >&2
    exit 1
fi

cargo build --release -p cli --bin shadowcopy

# The binary is where cargo put it (CARGO_TARGET_DIR, if set); the generated files go to the
# repository's target/packaging/ whatever it is, as the package's assets name them there.
bin="${CARGO_TARGET_DIR:-$root/target}/release/shadowcopy"
# The date on the man pages: the last commit's, so that the same commit makes the same pages.
SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}"
export SOURCE_DATE_EPOCH
out="$root/target/packaging"
rm -rf "$out"
mkdir -p "$out/man" "$out/completions"

"$bin" generate man --out "$out/man"
"$bin" generate completions bash >"$out/completions/shadowcopy.bash"
"$bin" generate completions zsh >"$out/completions/_shadowcopy"
"$bin" generate completions fish >"$out/completions/shadowcopy.fish"

# --strip: the release profile keeps line tables for backtraces in development; the packaged
# binary is stripped as Debian's are (a sixth of the size).
cargo deb -p cli --no-build --strip "$@"
