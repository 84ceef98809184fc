#!/usr/bin/env bash
# Tags a release of one of the separately versioned Go modules of this
# repository: make tag MODULE=events|handlers-sdk VERSION=vX.Y.Z.
#
# Go finds a module in a subdirectory by a tag prefixed with that directory:
# events/vX.Y.Z, handlers-sdk/vX.Y.Z. The SDK requires a tagged events version
# (its replace directive is for local work only and is ignored by users), so
# an SDK release is refused unless that events tag exists and holds the events
# code the SDK was tested with. The tag is created locally; push it yourself.
set -euo pipefail
mod=${1:-} ver=${2:-}
case "$mod" in
  events|handlers-sdk) ;;
  *) echo "usage: make tag MODULE=events|handlers-sdk VERSION=vX.Y.Z" >&2; exit 2 ;;
esac
[[ "$ver" =~ ^v[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$ ]] || { echo "tag: VERSION must be vX.Y.Z, got '$ver'" >&2; exit 2; }
[[ "$ver" =~ ^v[01]\. ]] || { echo "tag: a v2+ module needs a /vN module path first" >&2; exit 2; }
cd "$(git rev-parse --show-toplevel)"
git diff --quiet HEAD -- "$mod" || { echo "tag: $mod/ has uncommitted changes" >&2; exit 1; }
tag="$mod/$ver"
git rev-parse -q --verify "refs/tags/$tag" >/dev/null && { echo "tag: $tag exists" >&2; exit 1; }
if [[ "$mod" == handlers-sdk ]]; then
  ev=$(cd handlers-sdk && GOWORK=off go list -m -f '{{.Version}}' github.com/pe-bridge/pe-bridge/events)
  git rev-parse -q --verify "refs/tags/events/$ev" >/dev/null ||
    { echo "tag: handlers-sdk requires events $ev, which is not tagged: make tag MODULE=events VERSION=$ev first" >&2; exit 1; }
  git diff --quiet "events/$ev" HEAD -- events ||
    { echo "tag: events/ changed since events/$ev: tag a new events version and require it in handlers-sdk/go.mod" >&2; exit 1; }
fi
git tag -a "$tag" -m "$mod $ver"
echo "tagged $tag; publish with: git push origin $tag"
