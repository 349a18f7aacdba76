#!/bin/sh
# compose.yaml's one-time Garage set-up, through Garage's admin API (v2):
# the node's layout, the bucket, and picsift's access key with read, write
# and owner rights on it. Safe to run again: each step is skipped when done.
# Needs curl; reads GARAGE_ADMIN (http://host:3903), GARAGE_ADMIN_TOKEN,
# BUCKET, S3_KEY_ID (GK + 24 hex digits) and S3_SECRET (64 hex digits).
set -eu

api() { # METHOD ENDPOINT [JSON]
    curl -sS --fail-with-body -X "$1" -H "Authorization: Bearer $GARAGE_ADMIN_TOKEN" \
        -H 'Content-Type: application/json' ${3:+--data "$3"} "$GARAGE_ADMIN/v2/$2"
}

# Garage answers once it is up.
tries=0
until api GET GetClusterStatus > /tmp/status.json 2>/dev/null; do
    tries=$((tries + 1))
    [ "$tries" -lt 60 ] || { echo "garage-init: no answer from $GARAGE_ADMIN" >&2; exit 1; }
    sleep 1
done

# The layout: this single node in zone dc1, 10 GB.
if grep -q '"layoutVersion": *0[,}]' /tmp/status.json; then
    node=$(sed -n 's/.*"id": *"\([0-9a-f]\{64\}\)".*/\1/p' /tmp/status.json | head -n 1)
    [ -n "$node" ] || { echo "garage-init: no node id in the cluster status" >&2; exit 1; }
    api POST UpdateClusterLayout "{\"roles\":[{\"id\":\"$node\",\"zone\":\"dc1\",\"capacity\":10000000000,\"tags\":[]}]}" > /dev/null
    api POST ApplyClusterLayout '{"version":1}' > /dev/null
    echo "garage-init: layout applied (node $node)"
fi

# The bucket.
if ! api GET "GetBucketInfo?globalAlias=$BUCKET" > /tmp/bucket.json 2>/dev/null; then
    api POST CreateBucket "{\"globalAlias\":\"$BUCKET\"}" > /tmp/bucket.json
    echo "garage-init: bucket $BUCKET created"
fi
bucket_id=$(sed -n 's/^ *"id": *"\([0-9a-f]\{64\}\)".*/\1/p' /tmp/bucket.json | head -n 1)

# The key, and its rights on the bucket.
if ! api GET "GetKeyInfo?id=$S3_KEY_ID" > /dev/null 2>&1; then
    api POST ImportKey "{\"accessKeyId\":\"$S3_KEY_ID\",\"secretAccessKey\":\"$S3_SECRET\",\"name\":\"picsift\"}" > /dev/null
    echo "garage-init: key $S3_KEY_ID imported"
fi
api POST AllowBucketKey "{\"bucketId\":\"$bucket_id\",\"accessKeyId\":\"$S3_KEY_ID\",\"permissions\":{\"read\":true,\"write\":true,\"owner\":true}}" > /dev/null
echo "garage-init: key $S3_KEY_ID may read, write and own bucket $BUCKET"
