"""Helpers for the Badcase Killer and library tests.

* `write_stage`: commit a stage output that follows a contract (tests write `generate`'s
  output until that stage exists, and a small `extract_features` for tests without Spark).
* `generations_for`: generation rows (the `generate` contract) from active ads, with
  grounded titles that differ per cluster.
* `FaultProxy`: a real HTTP proxy in front of a real S3 server (moto or rclone) that
  injects faults on matching requests: 503 SlowDown, a connection dropped mid-body, or a
  request held until released. botocore's own retry logic must recover from them.
"""

from __future__ import annotations

import hashlib
import http.client
import re
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.parquet as pq

from jobs.platform.lake import StageRun

GENERATIONS_SCHEMA = pa.schema([
    ("request_id", pa.string()), ("ad_id", pa.string()), ("advertiser_id", pa.string()),
    ("cluster_id", pa.int32()), ("cluster_rank", pa.int16()), ("strategy", pa.string()),
    ("query", pa.string()), ("title", pa.string()), ("original_title", pa.string()),
    ("selling_points", pa.list_(pa.string())), ("brand", pa.string()),
    ("category", pa.string()), ("score", pa.float32()), ("model_version", pa.string()),
    ("centroid_version", pa.string()), ("hllm_version", pa.string()),
    ("generated_cycle_id", pa.string()), ("reused", pa.bool_()), ("output_tokens", pa.int32()),
])
AUDIENCES = ["for runners", "for home cooks", "for travelers", "for gamers", "for pet owners",
             "for commuters", "for book lovers", "for gift givers"]


def write_stage(cfg, cycle_id: str, stage: str, tables: dict[str, pa.Table],
                extra: dict | None = None) -> dict:
    run = StageRun(cfg.lake, cycle_id, stage, {"fixture": stage}, "fixture")
    with run.exclusive():
        out = run.begin()
        outputs = {}
        for name, table in tables.items():
            pq.write_table(table, out / f"{name}.parquet")
            outputs[name] = {"path": str(run.final / f"{name}.parquet"), "rows": table.num_rows}
        return run.commit(outputs, extra=extra)


def active_ads_from_catalog(ads: int = 30, seed: int = 3) -> pa.Table:
    """`active_ads` rows from the sample generator's catalog (no Spark needed)."""
    from jobs.sample.sample_data import SampleSpec, make_catalog

    t = make_catalog(SampleSpec(users=1, ads=ads, seed=seed)).table
    t = t.filter(pa.compute.equal(t.column("status"), "active")).drop_columns(["status"])
    hashes = [hashlib.sha256(x.encode()).hexdigest()[:16] for x in t.column("title").to_pylist()]
    return t.append_column("item_hash", pa.array(hashes)).append_column(
        "content_hash", pa.array([h[::-1] for h in hashes]))


def grounded_title(ad: dict, k: int) -> str:
    """A clean variant: the ad's own words, reordered, plus an audience or marketing phrase."""
    core = ad["title"].split(",")[0].split(" - ")[0]
    points = ad["selling_points"] or []
    forms = [
        f"{core} {AUDIENCES[k % len(AUDIENCES)]}",
        f"Meet the {core}: {points[0]}" if points else f"Meet the {core}",
        f"{core} - {points[-1]}" if points else f"Discover the {core}",
        f"Shop now: {core}, {AUDIENCES[(k + 3) % len(AUDIENCES)]}",
    ]
    return forms[k % len(forms)]


def generation_row(ad: dict, cluster_id: int, title: str, *, strategy: str = "query_free",
                   query: str | None = None, rank: int = 1, score: float = 0.5,
                   cycle_id: str = "20261101T000000Z") -> dict:
    rid = hashlib.sha256(f"{ad['content_hash']}|{cluster_id}|{strategy}|{query}".encode())
    return {"request_id": rid.hexdigest()[:16], "ad_id": ad["ad_id"],
            "advertiser_id": ad["advertiser_id"], "cluster_id": cluster_id, "cluster_rank": rank,
            "strategy": strategy, "query": query, "title": title,
            "original_title": ad["title"], "selling_points": ad["selling_points"],
            "brand": ad["brand"], "category": ad["category"], "score": score,
            "model_version": "creator-test", "centroid_version": "cv-test",
            "hllm_version": "hllm-test", "generated_cycle_id": cycle_id, "reused": False,
            "output_tokens": len(title.split())}


def generations_for(ads: pa.Table, clusters: int = 3) -> list[dict]:
    rows = []
    for ad in ads.to_pylist():
        for k in range(clusters):
            rows.append(generation_row(ad, k, grounded_title(ad, k), rank=k + 1,
                                       score=0.9 - 0.1 * k))
    return rows


def generations_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=GENERATIONS_SCHEMA)


def write_match_summary(cfg, cycle_id: str, rows: list[dict]) -> dict:
    """match_ads' summary for `rows` (one request each): the publish gate's denominators."""
    return write_stage(cfg, cycle_id, "match_ads", {}, extra={"summary": {
        "requests": len(rows), "ads_matched": len({r["ad_id"] for r in rows})}})


def write_generations(cfg, cycle_id: str, rows: list[dict]) -> dict:
    failed = pa.table({"request_id": pa.array([], pa.string()), "ad_id": pa.array([], pa.string()),
                       "reason": pa.array([], pa.string()), "detail": pa.array([], pa.string())})
    write_match_summary(cfg, cycle_id, rows)
    return write_stage(cfg, cycle_id, "generate",
                       {"generations": generations_table(rows), "failed": failed})


# ---------------------------------------------------------------------------------------
# Fault-injecting HTTP proxy
# ---------------------------------------------------------------------------------------

SLOW_DOWN = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
             b"<Message>Please reduce your request rate.</Message></Error>")


@dataclass
class Rule:
    method: str
    path: re.Pattern
    action: str  # "503" | "drop" | "hold"
    times: int = 1
    release: threading.Event = field(default_factory=threading.Event)
    hits: int = 0


class FaultProxy:
    """Forwards every request to `upstream` unchanged (Host header included, so SigV4
    signatures stay valid) except those a rule matches."""

    def __init__(self, upstream: str):
        u = urlsplit(upstream)
        self.upstream = (u.hostname, u.port)
        self.rules: list[Rule] = []
        self.seen: list[tuple[str, str, int]] = []  # (method, path, status or -1 dropped)
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _any(self):
                proxy._handle(self)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FaultProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        for r in self.rules:
            r.release.set()
        self.server.shutdown()
        self.server.server_close()

    def add(self, method: str, path_regex: str, action: str, times: int = 1) -> Rule:
        rule = Rule(method, re.compile(path_regex), action, times)
        with self.lock:
            self.rules.append(rule)
        return rule

    def _match(self, method: str, path: str) -> Rule | None:
        with self.lock:
            for r in self.rules:
                if r.method == method and r.path.search(path) and r.hits < r.times:
                    r.hits += 1
                    return r
        return None

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        rule = self._match(h.command, h.path)
        if rule and rule.action == "drop":
            h.rfile.read(length // 2)  # half the body arrives, then the connection dies
            self.seen.append((h.command, h.path, -1))
            h.close_connection = True
            with_socket = h.connection
            with_socket.shutdown(socket.SHUT_RDWR)
            return
        body = h.rfile.read(length) if length else b""
        if rule and rule.action == "503":
            self.seen.append((h.command, h.path, 503))
            h.send_response(503, "Slow Down")
            h.send_header("Content-Type", "application/xml")
            h.send_header("Content-Length", str(len(SLOW_DOWN)))
            h.end_headers()
            h.wfile.write(SLOW_DOWN)
            return
        if rule and rule.action == "hold":
            rule.release.wait(timeout=120)
        conn = http.client.HTTPConnection(*self.upstream, timeout=60)
        headers = {k: v for k, v in h.headers.items()}
        conn.request(h.command, h.path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        self.seen.append((h.command, h.path, resp.status))
        h.send_response(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() not in ("connection", "transfer-encoding", "keep-alive",
                                 "content-length"):
                h.send_header(k, v)
        if h.command == "HEAD":
            h.send_header("Content-Length", resp.getheader("Content-Length") or "0")
        else:
            h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(data)
        conn.close()

    def count(self, method: str, path_regex: str, status: int | None = None) -> int:
        rx = re.compile(path_regex)
        return sum(1 for m, p, s in list(self.seen)
                   if m == method and rx.search(p) and (status is None or s == status))


def lake_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in Path(root).rglob("*") if p.is_file())
