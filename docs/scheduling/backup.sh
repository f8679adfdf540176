#!/bin/sh
# The scheduled backup job, for cron, a systemd timer, a Kubernetes
# CronJob or a GitHub Actions schedule (each runs this same script):
#   1. back up the database into the repository;
#   2. prove the backup restores: restore the newest snapshot into a
#      temporary directory and verify it;
#   3. apply the retention policy (7 daily, 4 weekly, 12 monthly) and prune;
#   4. check health: fail when the newest snapshot is older than one period.
#
# Settings (environment):
#   PQSYNC_DB             the database directory            (required)
#   PQSYNC_REPO           the repository: a URL or @NAME    (required)
#   PQSYNC_MAX_AGE        health limit (default 7h: a 6-hour schedule plus slack)
#   PQSYNC_METRICS_FILE   if set, every step writes Prometheus metrics there
#   PQSYNC_PASSWORD / PQSYNC_CONFIG / AWS_* as for pqsync itself
set -eu

: "${PQSYNC_DB:?set PQSYNC_DB to the database directory}"
: "${PQSYNC_REPO:?set PQSYNC_REPO to the repository (a URL or @name)}"
max_age="${PQSYNC_MAX_AGE:-7h}"

pqsync backup "$PQSYNC_REPO" -d "$PQSYNC_DB" --tag scheduled

check=$(mktemp -d)
trap 'rm -rf "$check"' EXIT
pqsync restore "$PQSYNC_REPO:latest" -d "$check/db"
pqsync verify "$check/db"

pqsync forget "$PQSYNC_REPO" --keep-daily 7 --keep-weekly 4 --keep-monthly 12 --prune

pqsync health "$PQSYNC_REPO" -d "$PQSYNC_DB" --max-age "$max_age"
