// Stand-in for the Nocturna Chart Service: same shape (HOST:PORT, /health, graceful SIGTERM,
// POST /api/v2/chart/render behind `Authorization: Bearer $API_KEY`), no Chromium. Plain
// `http`, one runtime dependency (ms) to exercise `npm ci --omit=dev`.
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
const MAX_BODY_BYTES = 1024 * 1024;
// A 1x1 transparent PNG: what a render answers, without Chromium.
const TINY_PNG_BASE64 =
  "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==";

// A release can break after it went live (`failAfterRequests` answered requests, or
// `failAfterMs` after its first one): from then on everything but /health answers 500,
// as a renderer that leaks until it dies would. /health keeps answering 200 throughout.
let served = 0;
let firstServedAt = null;
// `renderFailAfter` (> 0): renders fail (500) once that many succeeded; everything else,
// /health included, keeps working: one dead endpoint behind a busy site. `renderHangAfter`
// (> 0): renders never answer once that many succeeded (a wedged renderer): nothing reaches
// the access log until the proxy gives up.
let renders = 0;

function broken() {
  if (release.failAfterRequests > 0 && served >= release.failAfterRequests) return true;
  return release.failAfterMs > 0 && firstServedAt !== null && Date.now() - firstServedAt >= release.failAfterMs;
}

function renderError(res) {
  sendJson(res, 500, { status: "error", error: { code: "RENDER_ERROR", message: "chart renderer failed" } });
}

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

function authorized(req) {
  return !process.env.API_KEY || req.headers.authorization === `Bearer ${process.env.API_KEY}`;
}

function render(req, res) {
  const chunks = [];
  let size = 0;
  req.on("data", (chunk) => {
    size += chunk.length;
    if (size <= MAX_BODY_BYTES) chunks.push(chunk);
  });
  req.on("end", () => {
    if (size > MAX_BODY_BYTES) return sendJson(res, 413, { status: "error", error: { code: "TOO_LARGE" } });
    let chart;
    try {
      chart = JSON.parse(Buffer.concat(chunks).toString("utf8"));
    } catch {
      return sendJson(res, 400, { status: "error", error: { code: "VALIDATION_ERROR" } });
    }
    if (chart === null || typeof chart !== "object") {
      return sendJson(res, 400, { status: "error", error: { code: "VALIDATION_ERROR" } });
    }
    // The failure mode of a release whose chart library did not install: /health says 200.
    if (release.renderOk === false) return renderError(res);
    if (release.renderFailAfter > 0 && renders >= release.renderFailAfter) return renderError(res);
    if (release.renderHangAfter > 0 && renders >= release.renderHangAfter) return;
    renders += 1;
    // The real service's shape: {"status":"success","data":{"image":<base64>,"format":"png",...}}.
    sendJson(res, 200, { status: "success", data: { image: TINY_PNG_BASE64, format: "png" }, meta: { version: release.version } });
  });
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, "http://localhost");
  if (url.pathname !== "/health") {
    if (broken()) return renderError(res);
    served += 1;
    if (firstServedAt === null) firstServedAt = Date.now();
  }
  if (url.pathname === "/api/v2/chart/render") {
    if (req.method !== "POST") {
      sendJson(res, 405, { status: "error", error: { code: "METHOD_NOT_ALLOWED" } });
    } else if (!authorized(req)) {
      sendJson(res, 401, { status: "error", error: { code: "AUTHENTICATION_ERROR" } });
    } else {
      render(req, res);
    }
  } else if (req.method !== "GET" && req.method !== "HEAD") {
    sendJson(res, 405, { error: "method not allowed" });
  } else if (url.pathname === "/health") {
    sendJson(res, release.healthy ? 200 : 503, health());
  } else if (release.rateLimitPath && url.pathname === release.rateLimitPath) {
    // A service whose rate limit sees every client behind Nginx as one address (issue 21).
    res.setHeader("Retry-After", "60");
    sendJson(res, 429, { status: "error", error: { code: "RATE_LIMITED" } });
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
