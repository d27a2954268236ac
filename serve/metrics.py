"""Prometheus metrics. Each app gets its own registry so several apps (tests) never collide.

With several server processes (``distill serve --workers N``) a scrape reaches one of them, so each process
writes its values to files under ``PROMETHEUS_MULTIPROC_DIR`` (set by the CLI before the workers start; prometheus
client's multiprocess mode) and every worker's ``/metrics`` reports the sum over all of them: counters and
histograms add up, the in-flight and queue gauges are summed over the live workers, ``ready`` is the minimum
(1 once every live worker is warm). The model ``Info`` is the same in every worker and is reported as is.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from .batching import BatchObserver

_LATENCY_BUCKETS = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25,
                    0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128, 256)

__all__ = ["ServeMetrics", "CONTENT_TYPE_LATEST"]


MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class ServeMetrics(BatchObserver):
    def __init__(self) -> None:
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        self.registry = CollectorRegistry(auto_describe=True)
        self._local = CollectorRegistry(auto_describe=True) if self.multiprocess else self.registry
        r = self.registry
        self.requests = Counter(
            "distill_serve_requests", "HTTP requests by route, method and status.", ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "distill_serve_request_latency_seconds", "HTTP request latency by route.", ["route"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.in_flight = Gauge("distill_serve_requests_in_flight", "HTTP requests being handled.", registry=r,
                               multiprocess_mode="livesum")
        self.batch_size = Histogram(
            "distill_serve_batch_size", "Images per inference call.", buckets=_BATCH_BUCKETS, registry=r
        )
        self.batch_requests = Histogram(
            "distill_serve_batch_requests", "Requests sharing one inference call.", buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.inference = Histogram(
            "distill_serve_inference_seconds", "Time of one inference call (whole batch).",
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.queue = Gauge("distill_serve_queue_depth", "Images waiting for inference.", registry=r,
                           multiprocess_mode="livesum")
        self.images = Counter("distill_serve_images", "Images classified.", registry=r)
        self.rejections = Counter(
            "distill_serve_rejected", "Submissions refused by the batcher (queue_full, closed).", ["reason"],
            registry=r,
        )
        self.image_errors = Counter(
            "distill_serve_image_errors", "Uploaded images refused, by HTTP status.", ["status"], registry=r
        )
        self.ready = Gauge("distill_serve_ready", "1 once the model is loaded and warmed up.", registry=r,
                           multiprocess_mode="livemin")
        self.model = Info("distill_serve_model", "The artifact being served.", registry=self._local)

    # BatchObserver hooks
    def queue_depth(self, images: int) -> None:
        self.queue.set(images)

    def batch(self, size: int, requests: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_requests.observe(requests)
        self.inference.observe(seconds)
        self.images.inc(size)

    def rejected(self, reason: str) -> None:
        self.rejections.labels(reason).inc()

    def render(self) -> bytes:
        if not self.multiprocess:
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        summed = CollectorRegistry()
        multiprocess.MultiProcessCollector(summed)
        return generate_latest(summed) + generate_latest(self._local)

    def close(self) -> None:
        """A worker stopping: its live gauges (in flight, queue, ready) leave the sums."""
        if self.multiprocess:
            forget_process(os.getpid())


def forget_process(pid: int) -> None:
    """Take a stopped (or killed) worker's live gauges out of the sums; a no-op outside multiprocess mode."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)
