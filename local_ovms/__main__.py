"""Command line: ``python -m local_ovms --config_path CONFIG --port 9000 --rest_port 8000``.

Flags follow OVMS (``--config_path``, ``--port``, ``--rest_port``, ``--log_level``, ``--grpc_workers``,
``--grpc_bind_address``, ``--rest_bind_address``) plus ``--max_streams``, ``--max_message_mb`` and
``--grace_period``. SIGTERM or SIGINT drains the server (see ``lifecycle.drain``) and exits 0; a
second signal skips the waiting.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType

from local_ovms.config import ConfigError, load_config
from local_ovms.grpc_service import InferenceService, start_grpc_server
from local_ovms.lifecycle import Activity, drain
from local_ovms.registry import Registry, State
from local_ovms.rest import RestServer, create_app

log = logging.getLogger("local_ovms")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The server's flags."""
    parser = argparse.ArgumentParser(prog="python -m local_ovms", description=__doc__.splitlines()[0])
    parser.add_argument("--config_path", required=True, help="OVMS config.json with a mediapipe_config_list")
    parser.add_argument("--port", type=int, default=9000, help="gRPC port (default 9000)")
    parser.add_argument("--rest_port", type=int, default=8000, help="REST and /metrics port; 0 = no REST")
    parser.add_argument(
        "--grpc_bind_address", default="0.0.0.0", help="gRPC listen address (default 0.0.0.0)"
    )
    parser.add_argument(
        "--rest_bind_address", default="0.0.0.0", help="REST listen address (default 0.0.0.0)"
    )
    parser.add_argument("--log_level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument(
        "--grpc_workers",
        type=int,
        default=1,
        help="accepted for OVMS compatibility; concurrency is set by --max_streams",
    )
    parser.add_argument(
        "--max_streams",
        type=int,
        default=256,
        help="simultaneous gRPC calls (streams), each on its own thread",
    )
    parser.add_argument(
        "--max_message_mb", type=float, default=64.0, help="largest gRPC message or REST body accepted (MiB)"
    )
    parser.add_argument(
        "--grace_period",
        type=float,
        default=5.0,
        help="seconds running requests get to finish on SIGTERM/SIGINT before handlers are finalized",
    )
    args = parser.parse_args(argv)
    if args.max_streams < 1 or args.max_message_mb <= 0 or args.grace_period < 0:
        parser.error("--max_streams must be >= 1, --max_message_mb > 0 and --grace_period >= 0")
    return args


def _install_signal_handlers(stop: threading.Event, activity: Activity) -> None:
    def on_signal(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            log.warning("second %s: not waiting any longer", signal.Signals(signum).name)
            activity.hurry.set()
        else:
            log.info("%s received", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def _exit_if_stuck(timeout: float) -> None:
    """Let the interpreter exit normally (atexit handlers run); exit hard if threads a handler keeps
    busy hold it up for more than ``timeout`` seconds."""

    def watchdog() -> None:
        time.sleep(timeout)
        busy = [t.name for t in threading.enumerate() if t.is_alive() and not t.daemon]
        log.warning("threads still busy after shutdown (%s): exiting anyway", ", ".join(busy))
        logging.shutdown()
        os._exit(0)

    threading.Thread(target=watchdog, name="exit-watchdog", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    """Run the server until SIGTERM/SIGINT; returns the exit code."""
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(Path(args.config_path))
    except ConfigError as exc:
        log.error("%s", exc)
        return 1
    for problem in config.problems:
        log.error("config %s: %s", args.config_path, problem)
    registry, activity, stop = Registry(config), Activity(), threading.Event()
    _install_signal_handlers(stop, activity)
    max_bytes = int(args.max_message_mb * 1024 * 1024)
    try:
        grpc_server, executor = start_grpc_server(
            InferenceService(registry, activity),
            f"{args.grpc_bind_address}:{args.port}",
            args.max_streams,
            max_bytes,
        )
    except RuntimeError as exc:
        log.error("%s", exc)
        return 1
    rest = None
    if args.rest_port:
        rest = RestServer(create_app(registry, activity, max_bytes), args.rest_bind_address, args.rest_port)
        try:
            rest.start()
        except RuntimeError as exc:
            log.error("%s", exc)
            grpc_server.stop(0)
            return 1
    log.info(
        "serving gRPC on %s:%d, REST on %s", args.grpc_bind_address, args.port, rest.address if rest else "-"
    )
    registry.load_all()
    states = [s.state for s in registry.servables]
    log.info(
        "server ready: %d graph(s) available, %d failed",
        states.count(State.AVAILABLE),
        states.count(State.FAILED),
    )
    while not stop.wait(0.5):
        pass
    drain(activity, registry, args.grace_period)
    grpc_server.stop(grace=1).wait()
    executor.shutdown(wait=False, cancel_futures=True)
    if rest is not None:
        rest.stop()
    log.info("stopped")
    _exit_if_stuck(5.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
