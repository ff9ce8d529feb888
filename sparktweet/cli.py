"""``sparktweet <command>``: one entry point; each command parses arguments and calls one function."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence

from sparktweet.config import get, load_config, resolve_path
from sparktweet.errors import SparkTweetError

log = logging.getLogger("sparktweet")

SAMPLE = os.path.join(os.path.dirname(__file__), "data", "sample_tweets.jsonl")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--conf", action="append", default=[], metavar="FILE", help="YAML config file(s) layered over conf/default.yaml")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides", help="dotted config override, repeatable")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def cmd_train(args: argparse.Namespace, config: dict) -> int:
    from sparktweet.session import build_session
    from sparktweet.training import train

    spark = build_session(config, app_name="sparktweet-train")
    result = train(
        spark, config,
        data=args.data or get(config, "train.data"), split=args.split or get(config, "train.split"),
        out=resolve_out(args.out or get(config, "train.out")), version=args.version, limit=args.limit,
    )
    s = result.metrics["sentiment"]
    print(f"model {result.version} saved to {result.model_path}")
    print(f"report: {os.path.join(result.report_path, 'report.md')}")
    print(f"sentiment accuracy {s['accuracy']:.3f}, macro-F1 {s['macro_f1']:.3f}; "
          f"topic LSTM vs LDA macro-F1 {result.metrics['topic_classifier_vs_lda']['macro_f1']:.3f}; "
          f"LDA agreement with human reasons {result.metrics['lda_agreement']['pooled_share'] or 0:.3f}; "
          f"c_v {result.metrics['lda_coherence_c_v']['overall']:.3f}")
    return 0


def resolve_out(path: str) -> str:
    return path if "://" in path or os.path.isabs(path) else os.path.abspath(path)


def cmd_score(args: argparse.Namespace, config: dict) -> int:
    from sparktweet.scoring import format_summary, score
    from sparktweet.session import build_session
    from sparktweet.training import load_model

    spark = build_session(config, app_name="sparktweet-score")
    model = load_model(args.model or get(config, "model.path"))
    inputs = [resolve_path(p) for p in (args.inputs or [SAMPLE])]
    summary = score(spark, model, inputs, resolve_out(args.output), fmt=args.format, partitions=args.partitions)
    sample = []
    if args.show:
        df = spark.read.parquet(summary.output)
        sample = df.orderBy(df["needs_ticket"].desc_nulls_last(), "tweet_id").limit(args.show).collect()
    print(format_summary(summary, sample))
    return 0


def cmd_kafka(args: argparse.Namespace, config: dict) -> int:
    from sparktweet import kafka_broker

    argv = [args.action]
    for f in args.conf:
        argv += ["--conf", f]
    for o in args.overrides:
        argv += ["--set", o]
    return kafka_broker.main(argv)


def cmd_dispatch(args: argparse.Namespace, config: dict) -> int:
    import signal
    import threading

    from sparktweet.dispatcher import run

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stats = run(config, args.mode or get(config, "dispatch.mode"), stop=stop, exit_when_idle_s=args.exit_when_idle)
    log.info("dispatcher stopped: %s", stats)
    return 0


def cmd_serve(args: argparse.Namespace, config: dict) -> int:
    from waitress import serve

    from sparktweet.web import create_app

    app = create_app({"SPARKTWEET": config})
    log.info("serving on http://%s:%d/ (dashboard: /dashboard)", args.host, args.port)
    serve(app, host=args.host, port=args.port, threads=args.threads, max_request_body_size=64 * 1024)
    return 0


def cmd_replay(args: argparse.Namespace, config: dict) -> int:
    import threading

    from sparktweet.replay import format_summary, replay

    stop = threading.Event()
    _on_stop_signals(stop.set)
    summary = replay(
        config, resolve_path(args.input), rate=args.rate, limit=args.limit, fmt=args.format, topic=args.topic,
        progress=not args.no_progress and sys.stderr.isatty(), stop=stop,
    )
    print(format_summary(summary))
    return 1 if summary.failed else 0


def cmd_ingest(args: argparse.Namespace, config: dict) -> int:
    from sparktweet.ingest import run_ingest

    stats = run_ingest(config, max_seconds=args.max_seconds)
    print("ingest: " + ", ".join(f"{k} {v}" for k, v in stats.as_dict().items()))
    return 0


def cmd_stream(args: argparse.Namespace, config: dict) -> int:
    from sparktweet.session import build_session
    from sparktweet.streaming import require_topics, run_stream

    require_topics(config)  # before Spark starts: a missing topic is a quick, clear error
    spark = build_session(config, app_name="sparktweet-stream")
    options = {
        "trigger": args.trigger, "starting_offsets": args.starting_offsets,
        "max_offsets_per_trigger": args.max_offsets_per_trigger, "dedup": False if args.no_dedup else None,
    }
    job = run_stream(
        spark, config, args.model or get(config, "model.path"),
        resolve_out(args.output or get(config, "stream.output", "var/stream/tweets")),
        resolve_out(args.checkpoint or get(config, "stream.checkpoint", "var/stream/checkpoint")),
        until_idle=args.until_idle, max_seconds=args.max_seconds, **options,
    )
    print("stream: " + ", ".join(f"{k} {v}" for k, v in job.stats.as_dict().items()))
    return 0


def cmd_demo(args: argparse.Namespace, config: dict) -> int:
    from sparktweet import kafka_broker
    from sparktweet.demo import format_demo, run_demo

    # The broker stays up while the web app serves: Spark's cached Kafka producers would otherwise
    # log a reconnect attempt every second. Stopped at the end if this command started it.
    stop_broker = not args.keep_broker and not kafka_broker.status(config).reachable
    try:
        result = run_demo(
            config, model_path=args.model or get(config, "model.path"), sample=resolve_path(args.input or SAMPLE),
            workdir=resolve_out(args.workdir), keep_broker=True, show=args.show, dispatch=not args.no_web,
        )
        print(format_demo(result))
        if not args.no_web:
            _serve_demo(args, config, result)
    finally:
        if stop_broker:
            kafka_broker.stop(config)
    return 0


def _serve_demo(args: argparse.Namespace, config: dict, result: object) -> None:
    """Start the web app, print where to look, serve for ``--serve-seconds``."""
    import threading

    from sparktweet.demo import format_web, start_web

    web = start_web(config, port=args.port)
    try:
        print(format_web(result, web), flush=True)
        stop = threading.Event()
        _on_stop_signals(stop.set)
        if args.serve_seconds > 0:
            forever = args.serve_seconds == float("inf")
            print("Serving until Ctrl-C." if forever else f"Serving for {args.serve_seconds:.0f} s (Ctrl-C stops it; "
                  "--serve-seconds inf keeps it up).", flush=True)
            stop.wait(None if forever else args.serve_seconds)
    finally:
        web.stop()


def _on_stop_signals(callback: Callable[[], object]) -> None:
    import signal

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: callback())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sparktweet", description="Triage customer tweets with Spark: train, score, stream, reply.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="fit the pipeline on Tweets.csv and the split; save model + report")
    _common(p)
    p.add_argument("--data", help="Tweets.csv (default train.data)")
    p.add_argument("--split", help="split.csv with tweet_id,split (default train.split)")
    p.add_argument("--out", help="output folder, e.g. models/<version> (default train.out)")
    p.add_argument("--version", help="model version string (default sparktweet-<UTC time>)")
    p.add_argument("--limit", type=int, help="cap training rows (quick runs)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("score", help="score CSV / JSON Lines / Parquet dumps into Parquet")
    _common(p)
    p.add_argument("inputs", nargs="*", help="input files (default: the bundled sample tweets)")
    p.add_argument("--output", required=True, help="output folder (Parquet, partitioned by date)")
    p.add_argument("--model", help="saved model folder (default model.path, the shipped model)")
    p.add_argument("--format", choices=["csv", "json", "parquet"], help="input format (default: from the extension)")
    p.add_argument("--partitions", type=int, help="repartition the input (parallelism)")
    p.add_argument("--show", type=int, default=0, metavar="N", help="print N scored tweets")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("kafka", help="the local Kafka broker: start|stop|status|restart|logs; topics: create the project topics on the configured brokers")
    _common(p)
    p.add_argument("action", choices=["start", "stop", "status", "restart", "logs", "topics"])
    p.set_defaults(func=cmd_kafka)

    p = sub.add_parser("dispatch", help="replies.outbox -> ticket store -> replies on X (exactly once per tweet)")
    _common(p)
    p.add_argument("--mode", choices=["dry-run", "approve", "live"], help="default: dispatch.mode, else dry-run")
    p.add_argument("--exit-when-idle", type=float, metavar="SECONDS", help="stop once the outbox and queue stay empty this long")
    p.set_defaults(func=cmd_dispatch)

    p = sub.add_parser("serve", help="ticket tracking page, agent dashboard and API (waitress)")
    _common(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--threads", type=int, default=4)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("replay", help="send a CSV / JSON Lines / Parquet dump to tweets.raw, paced")
    _common(p)
    p.add_argument("input", help="dump to replay (Tweets.csv, the bundled sample, a Parquet folder...)")
    p.add_argument("--rate", type=float, metavar="TWEETS_PER_S", help="pace (token bucket); default: as fast as possible")
    p.add_argument("--limit", type=int, metavar="N", help="send at most N records")
    p.add_argument("--format", choices=["csv", "json", "parquet"], help="input format (default: from the extension)")
    p.add_argument("--topic", help="target topic (default kafka.topics.raw)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("ingest", help="X filtered stream -> tweets.raw (bearer token from X_BEARER_TOKEN)")
    _common(p)
    p.add_argument("--max-seconds", type=float, help="stop after this many seconds (default: until SIGTERM)")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("stream", help="tweets.raw -> the model -> Parquet + replies.outbox + tweets.deadletter")
    _common(p)
    p.add_argument("--model", help="saved model folder (default model.path, the shipped model)")
    p.add_argument("--output", help="Parquet folder, partitioned by date (default stream.output)")
    p.add_argument("--checkpoint", help="checkpoint folder (default stream.checkpoint)")
    p.add_argument("--trigger", help='micro-batch trigger: "500 milliseconds", "available-now", "once" (default stream.trigger)')
    p.add_argument("--starting-offsets", help="earliest, latest or Spark's JSON offsets, for a new checkpoint (default earliest)")
    p.add_argument("--max-offsets-per-trigger", type=int, help="records per micro-batch at most (default stream.max_offsets_per_trigger)")
    p.add_argument("--until-idle", type=float, metavar="SECONDS", help="stop once no tweet arrived for this long")
    p.add_argument("--max-seconds", type=float, help="stop after this many seconds")
    p.add_argument("--no-dedup", action="store_true", help="do not dead-letter repeated tweet ids")
    p.set_defaults(func=cmd_stream)

    p = sub.add_parser("demo", help="the whole flow on a local broker: replay the sample, stream it, show what came out")
    _common(p)
    p.add_argument("--model", help="saved model folder (default model.path, the shipped model)")
    p.add_argument("--input", help="dump to replay (default: the bundled sample tweets)")
    p.add_argument("--workdir", default="var/demo-stream", help="Parquet output and checkpoint folder (emptied first)")
    p.add_argument("--keep-broker", action="store_true", help="leave the broker running afterwards")
    p.add_argument("--show", type=int, default=10, metavar="N", help="outbox records and dead letters to print")
    p.add_argument("--serve-seconds", type=float, default=120.0, metavar="SECONDS",
                   help="keep the web app up this long after printing its URLs (0: stop at once, inf: until Ctrl-C)")
    p.add_argument("--port", type=int, help="web app port (default: the port of tickets.tracking_url, else a free one)")
    p.add_argument("--no-web", action="store_true", help="stop after the stream: no dispatcher, no web app")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("py4j", "gensim", "matplotlib", "absl", "h5py"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        config = load_config(args.conf, args.overrides)
        func: Callable[[argparse.Namespace, dict], int] = args.func
        return func(args, config)
    except SparkTweetError as exc:
        print(f"sparktweet {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
