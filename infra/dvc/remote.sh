#!/usr/bin/env bash
# The team's DVC remote for the data (data.dvc): where one clone pushes the version it built or
# imported, and where every worker's clone pulls it, so each worker trains on the same bytes.
#   SAGE_ADA_DVC_REMOTE=/srv/sage-ada/dvc infra/dvc/remote.sh push|pull|status
# SAGE_ADA_DVC_REMOTE: any DVC remote URL (a shared folder, s3://…, ssh://…; the last two need
# DVC's plugin for them). It is configured in the clone's .dvc/config.local (not committed) as
# the default remote "team". infra/prefect/worker.sh pulls before it starts, when it is set.
source "$(dirname "$0")/../lib.sh"
if [ -z "${SAGE_ADA_DVC_REMOTE:-}" ]; then
  echo "error: SAGE_ADA_DVC_REMOTE is not set; set it to the team's DVC remote (a shared folder or a bucket URL)" >&2
  exit 2
fi
CLONE=${SAGE_ADA_CLONE:-$REPO_ROOT}
cd "$CLONE"
dvc remote add --local --force --default team "$SAGE_ADA_DVC_REMOTE" >/dev/null
case "${1:-}" in
  push) dvc push --quiet data.dvc && echo "data.dvc ($(sed -n 's/.*md5: //p' data.dvc | head -1)) is in $SAGE_ADA_DVC_REMOTE" ;;
  pull)
    if ! dvc pull --quiet data.dvc; then
      echo "error: could not pull data.dvc from $SAGE_ADA_DVC_REMOTE; push it from the clone that has the data (infra/dvc/remote.sh push)" >&2
      exit 1
    fi
    echo "data/ is the version data.dvc records, from $SAGE_ADA_DVC_REMOTE" ;;
  status) dvc status --cloud data.dvc ;;
  *) echo "usage: $0 push|pull|status" >&2; exit 2 ;;
esac
