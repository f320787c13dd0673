#!/usr/bin/env bash
# Regenerate the Gramine known-answer vectors with Gramine's own signer (gramine-sgx-sign).
#
#   bash regenerate.sh /path/to/gramine-checkout
#
# The checkout is a git clone of https://github.com/gramineproject/gramine that you fetched
# yourself (nothing of Gramine is committed here). Nothing of Gramine is built: its Python signer
# runs from the checkout with Debian's Python packages (python3-pyelftools python3-tomli
# python3-tomli-w python3-voluptuous python3-click python3-jinja2 python3-cryptography), and the
# only compiled part is the two-file C program that prints the constants module
# `_graminelibos_offsets` (meson normally generates it the same way). See README.md.
set -euo pipefail

gramine=${1:?usage: regenerate.sh /path/to/gramine-checkout}
gramine=$(cd "$gramine" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
py=/usr/bin/python3
date=2025-06-12

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The constants module, as pal/src/host/linux-sgx/meson.build generates it.
gcc -o "$work/offsets-print" \
    -I"$gramine/pal/include" -I"$gramine/pal/include/pal" -I"$gramine/pal/include/arch/x86_64" \
    -I"$gramine/pal/include/arch/x86_64/linux" -I"$gramine/pal/include/host/linux-common" \
    -I"$gramine/common/include" -I"$gramine/common/include/arch/x86_64" \
    -I"$gramine/pal/src/host/linux-sgx" \
    "$gramine/pal/src/host/linux-sgx/generated_offsets.c" \
    "$gramine/common/src/generated_offsets_print.c"
mkdir "$work/py"
"$work/offsets-print" --py >"$work/py/_graminelibos_offsets.py"

# The Python package with meson's @PLACEHOLDERS@ filled in, and its entry points (the `file`
# signing plugin).
version=$(sed -n "s/^ *version: '\(.*\)',$/\1/p" "$gramine/meson.build" | head -1)
cp -r "$gramine/python/graminelibos" "$gramine/python/graminelibos.dist-info" "$work/py/"
sed -i -e "s|@VERSION@|$version|" -e "s|@PKGLIBDIR@|/nonexistent|" -e "s|@LIBDIR@|/nonexistent|" \
    -e "s|@SYSLIBDIR@|/nonexistent|" -e "s|@SGX_ENABLED@|1|" "$work/py/graminelibos/__init__.py"
sed -e "s/@NAME@/gramine/" -e "s/@VERSION@/${version//~/}/" -e "s/@LICENSE@/LGPL-3.0-or-later/" \
    "$work/py/graminelibos.dist-info/METADATA.in" >"$work/py/graminelibos.dist-info/METADATA"

commit=$(git -C "$gramine" rev-parse HEAD 2>/dev/null || echo "${GRAMINE_COMMIT:?not a git checkout: set GRAMINE_COMMIT}")
describe=$(git -C "$gramine" describe --tags --always 2>/dev/null || echo "$commit")
{
    echo "gramine = \"$describe\""
    echo "commit = \"$commit\""
    echo "version = \"$version\""
    echo "date = \"$date\""
    for m in elftools tomli tomli_w voluptuous click jinja2 cryptography; do
        echo "python.$m = \"$("$py" -c "import importlib.metadata as md, sys; print(md.version({'elftools': 'pyelftools', 'tomli_w': 'tomli-w'}.get('$m', '$m')))")\""
    done
    echo "python.interpreter = \"$("$py" -c 'import platform; print(platform.python_version())')\""
} >"$here/GRAMINE_VERSION.toml"

: >"$here/expected.txt"
for manifest in "$here"/cases/*.manifest; do
    name=$(basename "$manifest" .manifest)
    pal=pal.so
    [ "$name" = skewed-pal ] && pal=pal-skewed.so
    PYTHONPATH="$work/py" "$py" -P "$gramine/python/gramine-sgx-sign" \
        --libpal "$here/$pal" --key "$here/signing-key.pem" --date "$date" \
        --manifest "$manifest" --output "$here/cases/$name.manifest.sgx" \
        --sigfile "$here/cases/$name.sig" >"$work/$name.log"
    # The MRENCLAVE Gramine printed (the same value is at 0x3c0 of the .sig).
    mrenclave=$(sed -n '/^Measurement:/{n;s/ //gp}' "$work/$name.log")
    echo "$name $pal $mrenclave $(sha256sum "$here/cases/$name.sig" | cut -d' ' -f1)" >>"$here/expected.txt"
    echo "$name: $mrenclave"
done
