#!/usr/bin/env bash
# Builds the Windows release: target/windows-release/azure-costs-proxy-VERSION-windows-x86_64.zip
# with azure-costs-proxy.exe, proxy.toml.example and windows.md (docs/windows.md), cross-built
# from Linux as .ci/windows does (same Debian packages). Checks with objdump that the .exe
# imports only DLLs that Windows itself ships: no MinGW runtime (libgcc_s, libwinpthread, ...).
set -euo pipefail
cd "$(dirname "$0")/.."

export PATH="/usr/bin:$PATH" RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1
export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER=x86_64-w64-mingw32-gcc
target=x86_64-pc-windows-gnu
/usr/bin/cargo build --locked --profile dist -Zbuild-std=std,panic_abort --target "$target" \
  --bin azure-costs-proxy
exe="target/$target/dist/azure-costs-proxy.exe"

# DLLs of Windows itself (System32) that a Rust program may import; anything else, such as the
# MinGW runtime, would have to ship beside the .exe and is refused.
allowed='^(kernel32|advapi32|ntdll|ws2_32|bcrypt|bcryptprimitives|userenv|crypt32|secur32|ole32|oleaut32|shell32|user32|msvcrt|ucrtbase|api-ms-win-[a-z0-9-]+)\.dll$'
imports=$(x86_64-w64-mingw32-objdump -p "$exe" | sed -n 's/^\s*DLL Name: //p' | sort -u)
echo "$exe imports:" $imports
bad=$(echo "$imports" | tr 'A-Z' 'a-z' | grep -Ev "$allowed" || true)
if [ -n "$bad" ]; then
  echo "error: $exe needs DLLs that Windows does not ship: $bad" >&2
  exit 1
fi

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
out=target/windows-release
name="azure-costs-proxy-$version-windows-x86_64"
rm -rf "${out:?}/$name" "$out/$name.zip"
mkdir -p "$out/$name"
cp "$exe" proxy.toml.example "$out/$name/"
cp docs/windows.md "$out/$name/windows.md"
(cd "$out" && python3 -m zipfile -c "$name.zip" "$name")
ls -l "$out/$name.zip"
python3 -m zipfile -l "$out/$name.zip"
