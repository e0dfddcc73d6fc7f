// Stand-in for the Nocturna Chart Service: same shape (HOST:PORT, /health, graceful SIGTERM),
// no Chromium. Plain `http`, one runtime dependency (ms) to exercise `npm ci --omit=dev`.
"use strict";

const fs = require("node:fs");
const http = require("node:http");
const path = require("node:path");
const ms = require("ms");
const release = require("./version");

const HOST = process.env.HOST || "0.0.0.0";
const PORT = Number(process.env.PORT || 3011);
const FORCED_EXIT_MS = ms("30s");
const MAX_SLOW_MS = ms("60s");
const INDEX_HTML = fs.readFileSync(path.join(__dirname, "..", "public", "index.html"));
const startedAt = Date.now();

function log(message, fields = {}) {
  process.stdout.write(`${JSON.stringify({ time: new Date().toISOString(), message, ...fields })}\n`);
}

function sendJson(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(text) });
  res.end(text);
}

function health() {
  return {
    status: release.healthy ? "healthy" : "degraded",
    version: release.version,
    slot: process.env.DEPLOYMENT_SLOT || null,
    auth: Boolean(process.env.API_KEY),
    uptime: (Date.now() - startedAt) / 1000,
    timestamp: new Date().toISOString(),
  };
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, "http://localhost");
  if (req.method !== "GET" && req.method !== "HEAD") {
    sendJson(res, 405, { error: "method not allowed" });
  } else if (url.pathname === "/health") {
    sendJson(res, release.healthy ? 200 : 503, health());
  } else if (url.pathname === "/slow") {
    const delay = Math.min(Math.max(Number(url.searchParams.get("ms")) || 0, 0), MAX_SLOW_MS);
    log("slow request started", { ms: delay });
    setTimeout(() => sendJson(res, 200, { slept: delay, version: release.version }), delay);
  } else if (url.pathname === "/") {
    res.writeHead(200, { "Content-Type": "text/html; charset=utf-8" });
    res.end(INDEX_HTML);
  } else {
    sendJson(res, 404, { error: "not found" });
  }
});

function shutdown(signal) {
  log("shutting down", { signal });
  // Stop accepting; idle keep-alive sockets close now, in-flight requests finish first.
  server.close(() => {
    log("stopped");
    process.exit(0);
  });
  server.closeIdleConnections();
  setTimeout(() => {
    log("forced exit: requests still in flight", { afterMs: FORCED_EXIT_MS });
    process.exit(1);
  }, FORCED_EXIT_MS).unref();
}

process.once("SIGTERM", shutdown);
process.once("SIGINT", shutdown);

server.listen(PORT, HOST, () => {
  log("listening", { host: HOST, port: PORT, version: release.version, auth: Boolean(process.env.API_KEY) });
});
