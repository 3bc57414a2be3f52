#!/usr/bin/env bash
# Apply the branch rulesets in .github/rulesets/*.json to a GitHub repository ("branch
# protection as code"). Creates each ruleset, or updates the one with the same name.
#
#   scripts/apply-branch-protection.sh [OWNER/REPO] [--dry-run]
#
# Needs the GitHub CLI (`gh`), logged in with admin rights on the repository (`gh auth login`;
# the token needs the "administration: write" permission). OWNER/REPO defaults to the
# repository of the current checkout. --dry-run prints the API calls without making them.
set -euo pipefail

cd "$(dirname "$0")/.."
repo=""
dry_run=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) dry_run=1 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) repo="$arg" ;;
  esac
done
command -v gh >/dev/null || { echo "the GitHub CLI (gh) is required" >&2; exit 2; }
command -v jq >/dev/null || { echo "jq is required" >&2; exit 2; }
if [ -z "$repo" ]; then
  repo="$(gh repo view --json nameWithOwner --jq .nameWithOwner)"
fi

existing="$(gh api "repos/$repo/rulesets" --paginate --jq '.[] | "\(.id)\t\(.name)"')"
shopt -s nullglob
files=(.github/rulesets/*.json)
[ ${#files[@]} -gt 0 ] || { echo "no rulesets in .github/rulesets" >&2; exit 2; }
for file in "${files[@]}"; do
  name="$(jq -r .name "$file")"
  id="$(awk -F'\t' -v name="$name" '$2 == name { print $1; exit }' <<<"$existing")"
  if [ -n "$id" ]; then
    call=(gh api --method PUT "repos/$repo/rulesets/$id" --input "$file")
    action="update"
  else
    call=(gh api --method POST "repos/$repo/rulesets" --input "$file")
    action="create"
  fi
  if [ "$dry_run" = 1 ]; then
    echo "dry-run: $action '$name': ${call[*]}"
  else
    "${call[@]}" >/dev/null
    echo "${action}d ruleset '$name' on $repo"
  fi
done
