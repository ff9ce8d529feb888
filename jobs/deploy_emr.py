"""Deploy the stream job to Amazon EMR (see sparktweet.deploy and README "Run on a cluster").

    python jobs/deploy_emr.py --base s3://BUCKET/sparktweet --cluster-id j-XXXXXXXX [--env-uri s3://...]
    python jobs/deploy_emr.py --base s3://BUCKET/sparktweet --create-cluster [--core-instance-count 2]

Credentials and region come from the standard AWS chain (environment, profile, instance role).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def build_parser() -> argparse.ArgumentParser:
    from sparktweet.deploy import RELEASE_LABEL, ClusterSpec

    spec = ClusterSpec()
    p = argparse.ArgumentParser(prog="deploy_emr.py", description="Upload model, environment and code to S3; run `spark-submit.sh stream` as an EMR step.")
    p.add_argument("--base", required=True, metavar="S3_URI", help="S3 folder for everything, e.g. s3://my-bucket/sparktweet")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--cluster-id", help="add the step to this running cluster (j-...)")
    target.add_argument("--create-cluster", action="store_true", help=f"create a cluster ({RELEASE_LABEL}) that runs the step")
    p.add_argument("--model", default=str(ROOT / "models" / "default"), help="saved model folder (with VERSION and pipeline/)")
    env = p.add_mutually_exclusive_group()
    env.add_argument("--env-archive", default=str(ROOT / "var" / "submit" / "env.tar.gz"),
                     help="environment archive to upload (./spark-submit.sh pack-env)")
    env.add_argument("--env-uri", help="S3 URI of an environment archive already uploaded (skips the upload)")
    p.add_argument("--conf", action="append", default=None, metavar="FILE", help="job config file(s), paths inside the bundle (default conf/emr.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides", help="job config override, repeatable")
    p.add_argument("--region", help="AWS region (default: the AWS chain's)")
    p.add_argument("--endpoint-url", help="AWS endpoint (a local stand-in such as moto; never needed on AWS)")
    p.add_argument("--release-label", default=spec.release_label)
    p.add_argument("--primary-instance-type", default=spec.primary_instance_type)
    p.add_argument("--core-instance-type", default=spec.core_instance_type)
    p.add_argument("--core-instance-count", type=int, default=spec.core_instance_count)
    p.add_argument("--subnet-id", help="EC2 subnet for a created cluster")
    p.add_argument("--key-name", help="EC2 key pair for SSH to a created cluster")
    p.add_argument("--wait", action="store_true", help="wait until the step runs (or ends) and print its state")
    return p


def main(argv: list[str] | None = None) -> int:
    from sparktweet.deploy import ClusterSpec, S3Uri, aws_clients, deploy_stream, wait_for_step
    from sparktweet.errors import SparkTweetError

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    cluster = None
    if args.create_cluster:
        cluster = ClusterSpec(release_label=args.release_label, primary_instance_type=args.primary_instance_type,
                              core_instance_type=args.core_instance_type, core_instance_count=args.core_instance_count,
                              subnet_id=args.subnet_id, key_name=args.key_name)
    try:
        s3, emr = aws_clients(args.region, args.endpoint_url)
        result = deploy_stream(
            s3, emr, S3Uri.parse(args.base), root=ROOT, model_dir=args.model,
            env_archive=None if args.env_uri else args.env_archive, env_uri=args.env_uri,
            cluster_id=args.cluster_id, cluster=cluster, conf_files=args.conf or ["conf/emr.yaml"], overrides=args.overrides,
        )
        out = asdict(result)
        if args.wait:
            out["step_state"] = wait_for_step(emr, result.cluster_id, result.step_id)
    except SparkTweetError as exc:
        print(f"deploy_emr: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
