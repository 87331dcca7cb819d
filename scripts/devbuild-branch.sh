#!/usr/bin/env bash
# Builds another branch's GPU test and benchmark binaries (as scripts/devbuild.sh does for this
# checkout) from a git worktree of BRANCH beside this checkout, packed as .devbuild/NAME.tar.gz
# (~6 MB: the binaries are mostly SASS, which compresses well; a device call carries 64 MiB), so
# that one device call can run several builds (scripts/ab-bench.sh). Run it after
# scripts/devbuild.sh, which empties .devbuild/. On the device:
#   for f in .devbuild/*.tar.gz; do tar xzf "$f" -C .devbuild; done   # -> .devbuild/NAME/
#   scripts/devbuild-branch.sh BRANCH NAME [--lib]   (--lib: also libblasst.a, for the SASS)
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { echo "usage: $0 BRANCH NAME [--lib]" >&2; exit 2; }
branch=$1 name=$2 root=$PWD lib=${3:-}
wt="$root/../.blasst-wt-$name"
if [ -d "$wt" ]; then
  git -C "$wt" checkout -q --detach "$branch"
else
  git worktree add -q --detach "$wt" "$branch"
fi
"$wt/scripts/devbuild.sh" >/dev/null  # the branch's own build of the same binaries, into $wt/.devbuild
rm -rf ".devbuild/$name" && mkdir -p ".devbuild/$name"
cp "$wt/.devbuild/tests/blasst_cuda_tests" "$wt/.devbuild/bench/blasst_cuda_decode_bench" \
  "$wt/.devbuild/bench/blasst_cuda_prefill_bench" ".devbuild/$name/"
[ "$lib" = --lib ] && cp "$wt/.devbuild/libblasst.a" ".devbuild/$name/"
git -C "$wt" log --oneline -1 > ".devbuild/$name/COMMIT"
tar czf ".devbuild/$name.tar.gz" -C .devbuild "$name" && rm -rf ".devbuild/$name"
echo "$branch $(git -C "$wt" rev-parse --short HEAD) -> .devbuild/$name.tar.gz ($(du -h ".devbuild/$name.tar.gz" | cut -f1))"
