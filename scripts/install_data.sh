#!/usr/bin/env bash
# Install the offline source data of longseq's real-data tasks (Debian/Ubuntu; run as root or with sudo).
#
#   image    <- dataset-fashion-mnist  (/usr/share/datasets/fashion-mnist/*-ubyte.gz)
#   text     <- bible-kjv              (the `bible` program and its KJV text)
#   lm_dict  <- dict-gcide             (gcide.dict.dz; unpacked with dpkg -x, so the dictd service it
#                                       depends on is NOT installed or started)
#   lm_code, retrieval <- nothing: the Python interpreter's own standard library
#
# dict-gcide is unpacked under "$LONGSEQ_DATA/sources/dict-gcide" (LONGSEQ_DATA defaults to
# $XDG_CACHE_HOME/longseq, else ~/.cache/longseq), where the lm_dict task looks for it.
# Without apt: get the same files elsewhere and point the tasks at them, e.g.
#   longseq data build image   --set data_dir=DIR       (DIR holds {train,t10k}-{images-idx3,labels-idx1}-ubyte.gz)
#   longseq data build text    --set source=kjv.txt     (kjv.txt = output of `bible -f gen1:1-rev22:21`)
#   longseq data build lm_dict --set path=gcide.dict.dz (or a plain-text gcide.dict)
set -euo pipefail

DATA="${LONGSEQ_DATA:-${XDG_CACHE_HOME:-$HOME/.cache}/longseq}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
fi

if ! command -v apt-get >/dev/null 2>&1; then
    cat >&2 <<'MSG'
install_data.sh: apt-get not found. Provide the data by hand (see the header of this script):
  Fashion-MNIST idx files (github.com/zalandoresearch/fashion-mnist) -> --set data_dir=DIR for `image`
  a KJV export in `bible -f` format                                   -> --set source=FILE for `text`
  GCIDE gcide.dict.dz or plain text                                   -> --set path=FILE for `lm_dict`
lm_code and retrieval need nothing.
MSG
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends dataset-fashion-mnist bible-kjv

if [ -f /usr/share/dictd/gcide.dict.dz ]; then
    echo "install_data.sh: GCIDE already installed at /usr/share/dictd/gcide.dict.dz"
else
    dest="$DATA/sources/dict-gcide"
    tmp="$(mktemp -d)"; chmod 755 "$tmp"
    trap 'rm -rf "$tmp"' EXIT
    (cd "$tmp" && apt-get download dict-gcide)
    mkdir -p "$dest"
    dpkg -x "$tmp"/dict-gcide_*.deb "$dest"
    echo "install_data.sh: GCIDE unpacked to $dest/usr/share/dictd/gcide.dict.dz"
fi
echo "install_data.sh: done. Check with: longseq data stats image; longseq data stats text; longseq data stats lm_dict"
