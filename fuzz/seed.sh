#!/usr/bin/env bash
# Fills fuzz/corpus/<target>/ with starting inputs: the small committed
# seeds in fuzz/seeds/, and the JPEGs under 32 KB of the PDQ reference
# corpus (tests/data/pdq, or $PICSIFT_PDQ_CORPUS).
# Existing corpus files are kept: libFuzzer adds what it finds to them.
set -euo pipefail
fuzz=$(cd "$(dirname "$0")" && pwd)
pdq=${PICSIFT_PDQ_CORPUS:-$fuzz/../tests/data/pdq}
seeds=$fuzz/seeds

fill() {
    local target=$1
    shift
    mkdir -p "$fuzz/corpus/$target"
    for kind in "$@"; do
        cp "$seeds/$kind"/* "$fuzz/corpus/$target/"
        if [ "$kind" = jpeg ] && [ -d "$pdq" ]; then
            find "$pdq" -name '*.jpg' -size -32k -exec cp {} "$fuzz/corpus/$target/" \;
        fi
    done
    echo "$target: $(ls "$fuzz/corpus/$target" | wc -l) files"
}

fill sniff jpeg png webp heif zip
fill jpeg_strip jpeg
fill decode_jpeg jpeg
fill prepare jpeg png webp heif
fill archive_light_check zip
fill archive_entries zip
fill jpeg_trailer jpeg
fill chunked_strip png webp
fill heif_container heif
fill gain_map_xmp xmp
