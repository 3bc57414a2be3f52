#!/usr/bin/env bash
# Deploy one image to the production target: the deploy step of cd-production (and the
# redeploy command of `rps deploy rollback`). A PLACEHOLDER to adapt to the real platform.
#
# Environment:
#   RPS_DEPLOY_IMAGE    the image to run (registry/name:tag)                      (required)
#   RPS_DEPLOY_TARGET   where, from the DEPLOY_TARGET secret                      (required)
#     ssh://user@host   a VM with docker: pull the image, replace the `rps-api` container
#                       (port 8000, settings from /etc/rps/api.env on the host; the host
#                       must be logged in to the registry for private images)
#     local             this machine, through `rps deploy run` (podman or docker)
#     dry-run           print what would happen, change nothing
#   RPS_DEPLOY_SSH_PORT ssh port (default 22); RPS_DEPLOY_CONTAINER, RPS_DEPLOY_PORT for local
#
# Anything else exits 2: replace this script with the platform's own deploy (kubectl set
# image, a PaaS CLI, ...), keeping the contract: exit 0 once the new image is starting.
set -euo pipefail

image="${RPS_DEPLOY_IMAGE:?RPS_DEPLOY_IMAGE is required}"
target="${RPS_DEPLOY_TARGET:?RPS_DEPLOY_TARGET is required}"
container="${RPS_DEPLOY_CONTAINER:-rps-api}"

case "$target" in
  ssh://*)
    host="${target#ssh://}"
    printf -v remote 'docker pull %q && { docker rm -f %q || true; } && docker run -d --name %q --restart unless-stopped -p 8000:8000 --env-file /etc/rps/api.env %q' \
      "$image" "$container" "$container" "$image"
    ssh -o BatchMode=yes -p "${RPS_DEPLOY_SSH_PORT:-22}" "$host" "$remote"
    echo "deployed $image to ${host#*@}"
    ;;
  local)
    rps deploy run --image "$image" --name "$container" --port "${RPS_DEPLOY_PORT:-8000}"
    ;;
  dry-run)
    echo "dry-run: would deploy $image as $container"
    ;;
  *)
    echo "deploy.sh: unsupported target '$target' (ssh://user@host, local or dry-run);" \
      "adapt scripts/deploy.sh to this platform" >&2
    exit 2
    ;;
esac
